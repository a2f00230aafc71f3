"""The wheel's package list covers every source package, an install claims only `gatewatch`, and the base
install is the volunteer's agent alone (the collector and the lab add `gatewatch[collector]`)."""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gatewatch.core.extras import COLLECTOR_EXTRA as COLLECTOR_EXTRA_NAME

REPO = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
ROOTS: dict[str, str] = dict(CONFIG["tool"]["setuptools"]["package-dir"])
EXPECTED_ROOTS = {"core", "probes", "analysis", "agent", "collector", "lab"}


def test_every_role_folder_is_mapped() -> None:
    assert set(ROOTS.values()) == EXPECTED_ROOTS
    assert all(dotted == f"gatewatch.{folder}" for dotted, folder in ROOTS.items())


def test_every_source_package_is_listed() -> None:
    listed = set(CONFIG["tool"]["setuptools"]["packages"])
    found = set()
    for dotted, folder in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([dotted, *rel.parts]))
    assert found == listed
    assert all(name.startswith("gatewatch.") for name in listed)


def test_installed_names_resolve_to_the_source_folders() -> None:
    import importlib

    for dotted, folder in ROOTS.items():
        module = importlib.import_module(dotted)
        assert Path(module.__file__).resolve().parent == REPO / folder


# --- The base install is the volunteer's agent (issue 14) -------------------------------------------------
# Which third-party distributions each side imports is read from the code (every import, lazy ones too), so
# the pyproject lists cannot drift from it silently.
AGENT_SIDE = ("core", "probes", "analysis", "agent")
COLLECTOR_SIDE = ("collector", "lab")
PI_WHEELS = REPO / "deploy" / "pi" / "wheels-checked.txt"
# Packages that have no armv7l wheel on PyPI and are compiled on a 32-bit Pi (plain C, no Rust); said in
# docs/raspberry-pi.md with the apt packages the build needs and the piwheels alternative.
COMPILED_ON_ARMV7L = frozenset({"cffi"})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_distributions(folders: tuple[str, ...]) -> set[str]:
    modules: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"gatewatch", "__future__"}
    owners = importlib.metadata.packages_distributions()
    unknown = sorted(name for name in third_party if name not in owners)
    assert not unknown, f"imported but not installed: {unknown}"
    return {_canonical(dist) for name in third_party for dist in owners[name]}


def _names(requirements: list[str]) -> set[str]:
    return {_canonical(Requirement(line).name) for line in requirements}


BASE = _names(CONFIG["project"]["dependencies"])
COLLECTOR_EXTRA = _names(CONFIG["project"]["optional-dependencies"]["collector"])


def test_the_base_install_is_exactly_what_the_agent_side_imports() -> None:
    assert _imported_distributions(AGENT_SIDE) == BASE


def test_the_collector_extra_adds_what_the_collector_and_lab_import() -> None:
    needed = _imported_distributions(COLLECTOR_SIDE) - BASE
    # multidict and yarl come with aiohttp (the collector's request headers are aiohttp's multidicts).
    assert needed - {"multidict", "yarl"} == COLLECTOR_EXTRA
    assert not COLLECTOR_EXTRA & BASE
    assert f"gatewatch[{COLLECTOR_EXTRA_NAME}]" in CONFIG["project"]["optional-dependencies"]["test"]


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory: pytest.TempPathFactory) -> Message:
    """The METADATA of the wheel pip builds from this tree (what PyPI would serve)."""
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "15",
            "-w",
            out,
            REPO,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and "No matching distribution found for setuptools" in done.stderr:
        pytest.skip("pip cannot fetch the build backend (setuptools) from an index: offline")
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("gatewatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_the_built_wheel_requires_only_the_agents_dependencies(wheel_metadata: Message) -> None:
    requires = [Requirement(line) for line in wheel_metadata.get_all("Requires-Dist") or []]
    base = {_canonical(req.name) for req in requires if req.marker is None}
    extra = {
        _canonical(req.name) for req in requires if req.marker and req.marker.evaluate({"extra": "collector"})
    }
    assert base == BASE
    assert extra - base == COLLECTOR_EXTRA
    assert {"aiohttp", "asyncpg", "duckdb"} <= extra and not {"aiohttp", "asyncpg", "duckdb"} & base
    assert COLLECTOR_EXTRA_NAME in (wheel_metadata.get_all("Provides-Extra") or [])


def _base_closure() -> dict[str, str]:
    """Every distribution the base install brings, with the version installed here (markers for this
    interpreter: a Pi runs CPython 3.11+ on Linux too)."""
    seen: dict[str, str] = {}
    todo = sorted(BASE)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = importlib.metadata.version(name)
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_canonical(req.name))
    return seen


def test_every_agent_dependency_has_a_raspberry_pi_wheel_or_is_documented() -> None:
    """deploy/pi/check_wheels.sh asked the index for each package of the agent's set for each Raspberry Pi
    OS target; its record must cover today's set, and only documented packages may lack a wheel."""
    rows = [
        line.split("\t") for line in PI_WHEELS.read_text(encoding="utf-8").splitlines() if line[:1] != "#"
    ]
    targets = {target for target, _, _ in rows}
    assert targets == {"bookworm-armv7l", "bookworm-aarch64", "trixie-armv7l", "trixie-aarch64"}
    checked = {_canonical(pin.split("==")[0]) for _, pin, _ in rows}
    closure = _base_closure()
    assert set(closure) <= checked, f"not checked for the Pi yet: run deploy/pi/check_wheels.sh ({closure})"
    for target, pin, found in rows:
        name = _canonical(pin.split("==")[0])
        if found == "NO-WHEEL":
            assert target.endswith("armv7l") and name in COMPILED_ON_ARMV7L, (target, pin)
        else:
            assert found.endswith(("-none-any.whl", f"_{target.split('-')[1]}.whl")), (target, found)
    guide = (REPO / "docs" / "raspberry-pi.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in guide for name in COMPILED_ON_ARMV7L)


def test_the_agent_imports_no_collector_dependency() -> None:
    """Every agent module (the whole run path: cli, runner, upload, daemon...) loaded in a fresh interpreter
    pulls in none of the collector's packages."""
    collector_modules = {name.replace("-", "_") for name in COLLECTOR_EXTRA} | {"multidict", "yarl"}
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import gatewatch.agent as agent\n"
        "for info in pkgutil.walk_packages(agent.__path__, 'gatewatch.agent.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "gatewatch" in loaded and "cryptography" in loaded  # the walk did import the agent
    assert not loaded & collector_modules, sorted(loaded & collector_modules)

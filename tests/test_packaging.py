"""The wheel's package list covers every source package, and an install claims only `gatewatch`."""

from __future__ import annotations

import tomllib
from pathlib import Path

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

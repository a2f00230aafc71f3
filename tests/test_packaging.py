"""The wheel's package list covers every source package, and an install claims only `gatewatch`."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"agent": "gatewatch.agent", "collector": "gatewatch.collector", "probes": "gatewatch.probes"}


def test_every_source_package_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for folder, dotted in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([dotted, *rel.parts]))
    assert found == listed
    assert all(name.startswith("gatewatch.") for name in listed)


def test_installed_names_resolve_to_the_source_folders() -> None:
    import gatewatch.agent
    import gatewatch.collector
    import gatewatch.probes

    for module, folder in [(gatewatch.agent, "agent"), (gatewatch.collector, "collector"),
                           (gatewatch.probes, "probes")]:  # fmt: skip
        assert Path(module.__file__).resolve().parent == REPO / folder

"""The import contract: each package imports only the layers below it, and no module imports itself back.

core  <-  probes, analysis  <-  agent, collector  <-  lab

The agent and the collector never import each other; only the lab (which drives both) imports either.
Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What each package may import of the project (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "probes": frozenset({"core"}),
    "analysis": frozenset({"core"}),
    "agent": frozenset({"core", "probes", "analysis"}),
    "collector": frozenset({"core", "probes", "analysis"}),
    "lab": frozenset({"core", "probes", "analysis", "agent", "collector"}),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["gatewatch", *parts])


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every gatewatch module ``path`` imports, as (line, dotted name), relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("gatewatch")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("gatewatch"):
                target = node.module
            else:
                continue
            # `from pkg import mod` imports pkg.mod when mod is a module; otherwise it names pkg itself.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if _source_of(candidate) else target))
    return found


def _source_of(dotted: str) -> Path | None:
    parts = dotted.split(".")[1:]
    if not parts:
        return None
    base = REPO.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _source_files() -> list[Path]:
    return sorted(path for root in ALLOWED for path in (REPO / root).rglob("*.py"))


def test_every_package_is_covered() -> None:
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert packages == set(ALLOWED), "a new top-level package needs its place in ALLOWED"


def _violations(path: Path, source: str | None = None) -> list[str]:
    root = path.relative_to(REPO).parts[0]
    wrong = []
    for line, target in _imports(path, source):
        layer = target.split(".")[1] if target.count(".") else ""
        if layer != root and layer not in ALLOWED[root]:
            wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    return wrong


@pytest.mark.parametrize("root", sorted(ALLOWED))
def test_packages_import_only_the_layers_below(root: str) -> None:
    wrong = [line for path in sorted((REPO / root).rglob("*.py")) for line in _violations(path)]
    assert not wrong, f"{root} may import only {sorted(ALLOWED[root])}:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in _source_files():
        graph[_module_name(path)] = {target for _, target in _imports(path) if _source_of(target)}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # A package's __init__ importing its own submodules is how a package re-exports, not a cycle.
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_every_spelling_of_an_import() -> None:
    """Relative, lazy and `from pkg import module` imports are all resolved (else the tests prove nothing)."""
    agent_module = REPO / "agent" / "runner.py"
    spellings = [
        "from gatewatch.collector.app import create_app",
        "import gatewatch.collector.cli",
        "from gatewatch.collector import app",
        "from gatewatch import collector",
        "from ..collector import ingest",
        "def later():\n    from gatewatch.collector.store import open_store",
    ]
    for source in spellings:
        assert _violations(agent_module, source), source
    assert not _violations(agent_module, "from ..core import failures\nfrom .queue import MeasurementQueue")
    core_module = REPO / "core" / "measurement.py"
    assert _violations(core_module, "from gatewatch.probes import web")
    assert _violations(core_module, "from ..analysis.rules import RULES")

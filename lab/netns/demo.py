"""``gatewatch-lab netns-demo``: the namespace lab end to end, printed (root only).

It builds the lab, runs the collector and one agent per ISP (with the packet-trace step), and prints per
censored domain the collector's scope and the packet evidence beside the ground truth. ``differences()``
is the pure comparison, also used by the tests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .build import missing_requirements
from .lab import NetnsLab
from .scenario import NETNS_SITES
from .system import NetnsSystemRun, run_netns_system

__all__ = ["differences", "run_demo"]


def differences(run: NetnsSystemRun) -> list[str]:
    """Where the collector's attribution differs from the scenario's ground truth (empty: none)."""
    scopes = {row["domain"]: row["scope"] for row in run.interference}
    found = []
    for site in NETNS_SITES:
        expected = site.scope if site.scope != "none" else None
        if scopes.get(site.name) != expected:
            found.append(f"{site.name}: scope {scopes.get(site.name)}, expected {expected}")
    return found


def render(run: NetnsSystemRun, console: Console) -> None:
    table = Table(title="namespace lab: where each block happens")
    for column in ("domain", "technique", "expected", "collector's scope", "packet evidence", "supports"):
        table.add_column(column)
    rows = {row["domain"]: row for row in run.interference}
    for site in NETNS_SITES:
        row = rows.get(site.name, {})
        evidence = row.get("packet_evidence") or {}
        table.add_row(
            site.name, site.technique or "-", site.scope, row.get("scope", "none"),
            evidence.get("rule_id", "-"), str(evidence.get("supports") or "-"),
        )  # fmt: skip
    console.print(table)


def run_demo(console: Console) -> bool:
    reason = missing_requirements()
    if reason is not None:
        console.print(f"[red]the namespace lab cannot run here:[/] it {reason}")
        return False
    with tempfile.TemporaryDirectory(prefix="gatewatch-netns-") as tmp, NetnsLab.start(Path(tmp)) as lab:
        with console.status("a collector abroad and one agent per ISP are measuring through the gateway"):
            run = run_netns_system(lab, Path(tmp))
    render(run, console)
    problems = differences(run)
    for problem in problems:
        console.print(f"[red]differs:[/] {problem}")
    return not problems

"""The lab demo: the unmodified probes run through the emulated censored network, judged against controls.

Each scenario URL is measured once from the clean vantage (the control) and once from every censored
network; the pure analysis turns each pair into a verdict, printed next to what the scenario expects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from gatewatch.analysis import analyse, load_default_fingerprints, summarise
from gatewatch.core.control import ControlObservations
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import blocking_label
from gatewatch.probes.web import measure

from .lab import Lab
from .networks import CENSORED_NETWORKS
from .system import SystemRun

__all__ = ["DemoRow", "measure_lab", "render_system", "render_table", "system_mismatches"]


@dataclass(frozen=True)
class DemoRow:
    network: str
    url: str
    keys: WebTestKeys
    control: ControlObservations
    verdict: Verdict
    expected: object

    @property
    def domain(self) -> str:
        return urlsplit(self.url).hostname or self.url

    @property
    def as_expected(self) -> bool:
        return self.verdict.blocking == self.expected


async def measure_lab(
    lab: Lab, networks: Sequence[str] = CENSORED_NETWORKS, concurrency: int = 16
) -> list[DemoRow]:
    """Measure every scenario URL from each network in ``networks``, each against its control."""
    fingerprints = load_default_fingerprints()
    slots = asyncio.Semaphore(concurrency)
    urls = lab.urls()

    async def control_for(url: str) -> ControlObservations:
        async with slots:
            return summarise(await measure(url, lab.control_config()))

    async def row(network: str, url: str, control: ControlObservations) -> DemoRow:
        async with slots:
            keys = await measure(url, lab.web_config(network))
        verdict = analyse(url, keys, control, fingerprints)
        return DemoRow(network, url, keys, control, verdict, lab.expected(url, network))

    controls = dict(zip(urls, await asyncio.gather(*(control_for(u) for u in urls)), strict=True))
    return list(await asyncio.gather(*(row(n, u, controls[u]) for n in networks for u in urls)))


def render_table(rows: Sequence[DemoRow], console: Console) -> None:
    table = Table(title="gatewatch lab: verdicts against the scenario", title_justify="left", box=SIMPLE_HEAD)
    for name in ("network", "domain", "blocking", "expected", "", "technique", "rule", "fingerprint"):
        table.add_column(name, no_wrap=name in ("network", "domain"))
    for r in sorted(rows, key=lambda r: (r.network, r.domain)):
        fp = r.verdict.fingerprint
        deciding = next((lv for lv in r.verdict.layers if lv.outcome == "interference"), None)
        rule = deciding.rule_id if deciding else (r.verdict.layers[-1].rule_id if r.verdict.layers else "")
        table.add_row(
            r.network,
            r.domain,
            blocking_label(r.verdict.blocking),
            blocking_label(r.expected),
            "[green]✓[/]" if r.as_expected else "[red]✗[/]",
            fp.technique if fp else "",
            rule,
            fp.key if fp else "",
        )
    console.print(table)
    wrong = sum(not r.as_expected for r in rows)
    verdict = "[green]all as expected[/]" if not wrong else f"[red]{wrong} differ from the scenario[/]"
    console.print(f"{len(rows)} measurements, {verdict}")


def _asn_network(lab: Lab) -> dict[str, str]:
    return {f"AS{n.asn}": n.name for n in lab.networks.values()}


def system_mismatches(run: SystemRun, lab: Lab) -> list[str]:
    """Where the collector's verdicts or attribution differ from what the scenario expects."""
    networks = _asn_network(lab)
    problems = [
        f"{networks.get(m.probe_asn, m.probe_asn)} {m.domain}: "
        f"blocking {m.blocking!r}, expected {lab.expected(m.input, networks[m.probe_asn])!r}"
        for m in run.measurements
        if m.probe_asn not in networks or m.blocking != lab.expected(m.input, networks[m.probe_asn])
    ]
    scopes = {row.domain: row.scope for row in run.interference}
    for spec in lab.scenario.domains:
        want = spec.expected_scope
        got = scopes.get(spec.name, "none")
        if got != want:
            problems.append(f"{spec.name}: scope {got!r}, expected {want!r}")
    return problems


def render_system(run: SystemRun, lab: Lab, console: Console) -> None:
    networks = _asn_network(lab)
    table = Table(
        title="the collector's verdicts (re-derived from the agents' uploads)",
        title_justify="left",
        box=SIMPLE_HEAD,
    )
    for name in ("network", "domain", "blocking", "expected", "", "technique", "fingerprint"):
        table.add_column(name, no_wrap=True)
    for m in sorted(run.measurements, key=lambda m: (m.probe_asn, m.domain)):
        network = networks.get(m.probe_asn, m.probe_asn)
        expected = lab.expected(m.input, network) if network in lab.networks else None
        table.add_row(
            f"{network} ({m.probe_asn})", m.domain, blocking_label(m.blocking), blocking_label(expected),
            "[green]✓[/]" if m.blocking == expected else "[red]✗[/]",
            m.technique or "", m.fingerprint_key or "",
        )  # fmt: skip
    console.print(table)
    scope_table = Table(
        title="gateway or ISP? attribution per domain (GET /api/v1/interference)", title_justify="left",
        box=SIMPLE_HEAD,
    )  # fmt: skip
    for name in ("domain", "scope", "technique", "networks affected/measured", "rule", "fingerprint"):
        scope_table.add_column(name, no_wrap=True)
    for row in sorted(run.interference, key=lambda r: (r.scope, r.domain)):
        colour = "red" if row.scope == "gateway" else "yellow"
        scope_table.add_row(
            row.domain, f"[{colour}]{row.scope}[/]", row.technique or "",
            f"{row.networks_affected}/{row.networks_measured}", row.rule_id, row.fingerprint_key or "",
        )  # fmt: skip
    console.print(scope_table)
    problems = system_mismatches(run, lab)
    summary = "[green]all as the scenario expects[/]" if not problems else f"[red]{len(problems)} differ[/]"
    console.print(
        f"{len(run.measurements)} measurements stored, {len(run.interference)} domains attributed: {summary}"
    )
    for problem in problems:
        console.print(f"  [red]✗[/] {problem}")

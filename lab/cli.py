"""``gatewatch-lab``: run the emulated censored network from a shell.

Each command is a plain function registered on ``app``; add another (e.g. ``demo``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .demo import measure_lab, render_system, render_table, system_mismatches
from .lab import Lab
from .scenario import ScenarioError
from .system import run_system

__all__ = ["app", "main"]

app = typer.Typer(
    help="The gatewatch lab: an emulated censored network on loopback (no root).",
    no_args_is_help=True,
    add_completion=False,
)

ScenarioOption = Annotated[
    str, typer.Option("--scenario", "-s", help="A packaged scenario name or a path to a TOML file.")
]


@app.callback()
def _commands() -> None:
    """Keeps ``serve`` a sub-command, so other commands can sit beside it."""


def describe(lab: Lab, console: Console) -> None:
    """Print what a probe needs to use the lab: resolver, CA, networks and URLs."""
    console.print(f"[bold]scenario[/]  {lab.scenario.name} ({lab.scenario.origin})")
    console.print(f"[bold]resolver[/]  {lab.resolver}")
    console.print(f"[bold]CA file[/]   {lab.ca_file}")
    console.print(f"[bold]latency[/]   {lab.scenario.latency_ms:g} ms per round trip")
    if lab.wildcard_addresses:
        console.print(
            f"[bold]wildcard[/]  unlisted names are clean sites at {', '.join(lab.wildcard_addresses)} "
            f"(give real URLs the lab's port: http {lab.http_port}, https {lab.https_port})"
        )
    console.print("[bold]networks[/]")
    for network in lab.networks.values():
        console.print(
            f"  {network.name:<6} {network.cidr:<15} bind {network.source_address:<12} "
            f"AS{network.asn} {network.network_name} ({network.cc})"
        )
    console.print("[bold]URLs[/]")
    for url in lab.urls():
        console.print(f"  {url}")


async def _serve(
    scenario: str,
    duration: float | None,
    asn_csv: Path | None,
    country_csv: Path | None,
    latency_ms: float | None = None,
    wildcard: bool | None = None,
) -> None:
    console = Console()
    async with Lab(scenario, latency_ms=latency_ms, wildcard=wildcard) as lab:
        if asn_csv is not None:
            lab.write_asn_csv(asn_csv)
        if country_csv is not None:
            lab.write_country_csv(country_csv)
        describe(lab, console)
        console.print("serving; Ctrl-C to stop" if duration is None else f"serving for {duration:g} s")
        if duration is None:
            await asyncio.Event().wait()  # until cancelled by Ctrl-C
        else:
            await asyncio.sleep(duration)


@app.command()
def serve(
    scenario: ScenarioOption = "default",
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    asn_csv: Annotated[
        Path | None, typer.Option(help="Also write an ip-location-db ASN CSV of the lab's ranges here.")
    ] = None,
    country_csv: Annotated[
        Path | None, typer.Option(help="Also write an ip-location-db country CSV of the lab's ranges here.")
    ] = None,
    latency_ms: Annotated[
        float | None,
        typer.Option(help="Every lab server waits this long before answering (default: the scenario's)."),
    ] = None,
    wildcard: Annotated[
        bool | None,
        typer.Option(
            "--wildcard/--no-wildcard",
            help="Serve unlisted names as clean sites, for real test lists (default: the scenario's).",
        ),
    ] = None,
) -> None:
    """Start the lab, print how to reach it, and serve until Ctrl-C or --duration."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(scenario, duration, asn_csv, country_csv, latency_ms, wildcard))
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _demo(scenario: str, console: Console, system: bool) -> bool:
    async with Lab(scenario) as lab:
        if lab.blackhole_mode == "accept-queue":
            console.print(
                "[yellow]note:[/] this kernel refused an unprivileged socket filter, so blackholed addresses "
                "drop every client, the control included: their verdicts cannot match the scenario here."
            )
        if system:
            with console.status("a collector and one agent per censored network are measuring the lab"):
                run = await run_system(lab)
            render_system(run, lab, console)
            return not system_mismatches(run, lab)
        with console.status("measuring the lab from each censored network and from the clean vantage"):
            rows = await measure_lab(lab)
    render_table(rows, console)
    return all(r.as_expected for r in rows)


@app.command()
def demo(
    scenario: ScenarioOption = "default",
    probes_only: Annotated[
        bool, typer.Option("--probes-only", help="Only the probes and the analysis: no collector, no agents.")
    ] = False,
) -> None:
    """The whole system on loopback: a collector, one agent per censored network, verdicts and attribution.

    With --probes-only, the probes measure the lab directly against a clean control. Exits 1 when a
    verdict (or a gateway/ISP attribution) differs from what the scenario expects.
    """
    # Piped output (CI logs, files) gets room for the whole table instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    try:
        ok = asyncio.run(_demo(scenario, console, system=not probes_only))
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not ok:
        raise typer.Exit(1)


@app.command("netns-demo")
def netns_demo() -> None:
    """Root only: a real on-path censor in network namespaces, the unmodified agent and collector through it.

    Prints each blocked domain's attribution and packet evidence; exits 1 when one differs from the
    scenario's ground truth.
    """
    from .netns.demo import run_demo  # scapy and the namespace lab load only for this command

    if not run_demo(Console() if sys.stdout.isatty() else Console(width=150)):
        raise typer.Exit(1)


def main() -> None:
    app()

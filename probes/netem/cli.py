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

from .demo import measure_lab, render_table
from .lab import Lab
from .scenario import ScenarioError

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
    scenario: str, duration: float | None, asn_csv: Path | None, country_csv: Path | None
) -> None:
    console = Console()
    async with Lab(scenario) as lab:
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
) -> None:
    """Start the lab, print how to reach it, and serve until Ctrl-C or --duration."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(scenario, duration, asn_csv, country_csv))
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _demo(scenario: str, console: Console) -> bool:
    async with Lab(scenario) as lab:
        if lab.blackhole_mode == "accept-queue":
            console.print(
                "[yellow]note:[/] this kernel refused an unprivileged socket filter, so blackholed addresses "
                "drop every client, the control included: their verdicts cannot match the scenario here."
            )
        with console.status("measuring the lab from each censored network and from the clean vantage"):
            rows = await measure_lab(lab)
    render_table(rows, console)
    return all(r.as_expected for r in rows)


@app.command()
def demo(scenario: ScenarioOption = "default") -> None:
    """Measure every scenario URL from each censored network against a clean control; print the verdicts.

    Exits 1 when a verdict differs from what the scenario expects.
    """
    # Piped output (CI logs, files) gets room for the whole table instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    try:
        ok = asyncio.run(_demo(scenario, console))
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    app()

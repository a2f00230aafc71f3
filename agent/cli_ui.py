"""``gatewatch-agent ui``: the volunteer's local web page (consent, settings, runs, results, uploads).

The page's server (:mod:`.ui`) is imported only inside the command, so ``run`` and ``daemon`` never load
it (the agent's memory goal, issue 4; ``tests/agent/ui/test_cli_ui.py`` checks).
"""

# Annotations stay objects, not text (no __future__ import): see cli_common.

from pathlib import Path
from typing import Annotated

import typer

from .cli_common import (
    CaFile,
    DataDir,
    Resolver,
    Routable,
    SourceAddress,
    fail,
    setup_logging,
    start_collecting,
)
from .paths import DataPaths

__all__ = ["ui"]


def ui(
    listen: Annotated[
        str, typer.Option("--listen", help="Loopback address[:port] (127.0.0.1 or ::1; port 0: any free).")
    ] = "127.0.0.1:0",
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the address instead of opening a browser.")
    ] = False,
    idle_timeout: Annotated[
        float,
        typer.Option("--idle-timeout", min=5, help="Stop this many seconds after the last page was closed."),
    ] = 120.0,
    data_dir: DataDir = None,
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
    input_file: Annotated[
        list[Path], typer.Option("--input-file", help="Measure this Citizen Lab CSV list instead.")
    ] = [],  # noqa: B006
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Open the agent in your web browser: risks and consent, settings, run now, results, uploads."""
    import asyncio
    import webbrowser

    from .ui.app import UiConfig
    from .ui.runs import LabFlags
    from .ui.security import NotLoopback, parse_listen
    from .ui.serve import serve

    start_collecting()
    setup_logging(verbose)
    try:
        address = parse_listen(listen)
    except NotLoopback as exc:
        raise fail(str(exc)) from None
    config = UiConfig(
        paths=DataPaths.at(data_dir),
        listen=address,
        idle_timeout=idle_timeout,
        flags=LabFlags(
            resolver=resolver,
            ca_file=ca_file,
            source_address=source_address,
            routable=tuple(routable),
            input_files=tuple(input_file),
        ),
    )

    def announce(url: str) -> None:
        typer.echo(f"gatewatch is open at {url}" if not no_browser else f"Open this address: {url}")
        typer.echo("(Quit on the page, or press Ctrl+C, to stop.)")

    try:
        asyncio.run(serve(config, announce=announce, open_browser=None if no_browser else webbrowser.open))
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None

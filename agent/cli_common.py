"""What the agent's commands share: the console, how a command fails, logging, exit codes and the options
several commands take."""

# No ``from __future__ import annotations`` in the modules of the commands' options: typer reads each
# option from its command's annotations, every time it builds the command line (once for all commands,
# again for the one that runs), and annotations kept as text are evaluated again each time (~5 ms of
# every start; issue 16).

import functools
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .paths import DataPaths

# Only typer and these option types at import: the command line's help, and commands that neither measure
# nor upload, must not pay for the models, probes and analysis (tests/agent/test_cli_imports.py checks).
if TYPE_CHECKING:
    from rich.console import Console

    from .settings import AgentSettings

__all__ = [
    "EXIT_NOT_MEASURED",
    "EXIT_STILL_PENDING",
    "EXIT_USAGE",
    "CaFile",
    "PacketTraceFlag",
    "TraceControlDomain",
    "DataDir",
    "Resolver",
    "Proxy",
    "Routable",
    "SourceAddress",
    "Tor",
    "console",
    "fail",
    "load_settings_or_fail",
    "log",
    "setup_logging",
    "start_collecting",
]

log = logging.getLogger("gatewatch.agent")

EXIT_USAGE = 2  # the volunteer must do something first (consent, key, list)
EXIT_NOT_MEASURED = 3
EXIT_STILL_PENDING = 4  # `upload` could not deliver everything (the queue keeps it)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where the key, consent and queue live.")]
Resolver = Annotated[str | None, typer.Option("--resolver", help="DNS resolver IP[:PORT].")]
PacketTraceFlag = Annotated[
    bool,
    typer.Option(
        "--packet-trace",
        help="Record packet evidence of interfered flows (needs CAP_NET_RAW; noted as skipped without).",
    ),
]
TraceControlDomain = Annotated[
    str | None,
    typer.Option("--trace-control-domain", help="The unblocked name a packet trace compares with."),
]
CaFile = Annotated[str | None, typer.Option("--ca-file", help="Extra CA (PEM), for test labs.")]
SourceAddress = Annotated[str | None, typer.Option("--source-address", help="Lab: bind here.")]
Routable = Annotated[list[str], typer.Option("--routable", help="Lab: CIDR not treated as bogon.")]
Proxy = Annotated[
    str | None,
    typer.Option(
        "--proxy",
        help="Reach the collector through this proxy: socks5h://HOST:PORT (the proxy resolves the "
        "collector's name), socks5://, or http:// (CONNECT); user:pass@ optional. Measurements never "
        "go through it.",
    ),
]
Tor = Annotated[
    bool,
    typer.Option(
        "--tor",
        help="Reach the collector through the local Tor (tor_socks, default 127.0.0.1:9050), a circuit "
        "of its own per upload; .onion collector addresses need it. Measurements never go through Tor.",
    ),
]


@functools.cache
def console(stderr: bool = False) -> "Console":
    """rich's console, made when first needed: a pass under systemd or cron never draws one until its
    summary, and importing rich costs a volunteer's machine about 2 MiB (issue 4)."""
    from rich.console import Console

    # No emoji codes: the agent never writes one, and a URL or an error that happened to contain ":name:"
    # would be changed (and the first such check loads rich's table of emoji names).
    return Console(stderr=stderr, emoji=False)


def start_collecting() -> None:
    """Called by every command once its modules are loaded, before it works. The process's entry
    (cli.main) pauses the cyclic garbage collector while typer, pydantic and the command's modules load:
    they make some 50,000 objects that live as long as the process and no garbage, and the collections
    they would trigger cost ~10 ms of a one-URL run (issue 16). Here what they made is frozen (no later
    collection walks it again: the daemon's and the pass's collections stay small) and collecting
    resumes. A command run in-process (tests, the page's runs) finds the collector on and changes nothing."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    from .display import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("gatewatch.agent").setLevel(logging.INFO)


def load_settings_or_fail(paths: DataPaths, **overrides: object) -> "AgentSettings":
    """``agent.toml`` with the command line's ``overrides``; a mistake in either is the volunteer's to fix."""
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings(paths.settings)
        return settings.with_overrides(**overrides) if overrides else settings
    except SettingsError as exc:
        raise fail(str(exc)) from None

"""``gatewatch-agent``: init (consent and key), run (one pass), daemon, upload, status, results, ui.

One typer app; the commands live with what they do: :mod:`.cli_init` (consent), :mod:`.cli_run`
(measuring and delivering), :mod:`.cli_report` (what the agent did), :mod:`.cli_ui` (the local web page).
"""

from __future__ import annotations

import gc

import typer

from .cli_init import init
from .cli_report import results, status
from .cli_run import daemon, run, upload
from .cli_ui import ui

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="gatewatch volunteer agent: measures which websites are blocked on your network.",
)
for command in (init, run, daemon, upload, status, results, ui):  # in the order `--help` lists them
    app.command()(command)


def main() -> None:
    """The process's entry (the console script and ``python -m``): one command, then the process ends."""
    gc.disable()  # until the command's modules are loaded: cli_common.start_collecting
    try:
        app()
    finally:
        # What the command imported and made lives until the process ends. Frozen, the interpreter's exit
        # does not walk it again to collect it (~50 ms of a one-URL run's CPU here; issue 16): the process
        # is ending, its memory goes back whole. Files and the queue were closed by the command itself.
        gc.freeze()


if __name__ == "__main__":  # python -m gatewatch.agent.cli
    main()

"""``gatewatch-agent``: init (consent and key), run (one pass), daemon, upload, status, results, ui.

One typer app; the commands live with what they do: :mod:`.cli_init` (consent), :mod:`.cli_run`
(measuring and delivering), :mod:`.cli_report` (what the agent did), :mod:`.cli_ui` (the local web page).
"""

from __future__ import annotations

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
    app()


if __name__ == "__main__":  # python -m gatewatch.agent.cli
    main()

"""What an install holds: the base install is the volunteer's agent; the collector and the lab need an extra.

A console script whose package needs an extra imports its command-line module through
:func:`run_or_explain`, so that a missing dependency reads as an install instruction, not a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["COLLECTOR_EXTRA", "missing_extra_message", "run_or_explain"]

# pyproject.toml's [project.optional-dependencies] name for the collector's (and the lab's) dependencies.
COLLECTOR_EXTRA = "collector"


def missing_extra_message(program: str, missing_module: str, extra: str) -> str:
    """The one line a volunteer or an operator sees when ``program`` lacks the dependencies of ``extra``."""
    return (
        f"{program} needs the gatewatch[{extra}] dependencies (module {missing_module!r} is not installed).\n"
        f"Install them with: pip install 'gatewatch[{extra}]'   (the agent alone needs none of them)"
    )


def run_or_explain(program: str, cli_module: str, extra: str) -> None:
    """Import ``cli_module`` and call its ``main``; a third-party module missing on the way exits 2 with
    :func:`missing_extra_message` on stderr. A missing module of gatewatch itself is a bug and is raised."""
    try:
        main: Callable[[], None] = importlib.import_module(cli_module).main
    except ModuleNotFoundError as exc:
        name = exc.name or ""
        if not name or name.split(".")[0] == "gatewatch":
            raise
        sys.stderr.write(missing_extra_message(program, name.split(".")[0], extra) + "\n")
        raise SystemExit(2) from None
    main()

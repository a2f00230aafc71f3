"""The project's programs as an installation provides them: the console scripts ``pip`` writes.

The demo, the end-to-end tests and the benchmarks start the agent and the collector exactly as an
operator or a volunteer would, by their command lines, rather than through code strings run by the
interpreter: what runs is then what ``pyproject.toml``'s ``[project.scripts]`` installs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Final

__all__ = ["AGENT", "COLLECTOR", "LAB", "SCRIPTS", "ScriptNotFound", "console_script"]

AGENT: Final = "gatewatch-agent"
COLLECTOR: Final = "gatewatch-collector"
LAB: Final = "gatewatch-lab"
# Every console script of the project (a test keeps this in step with pyproject.toml).
SCRIPTS: Final[tuple[str, ...]] = (AGENT, COLLECTOR, LAB)


class ScriptNotFound(LookupError):
    """A console script is not installed where this interpreter's scripts are, nor on PATH."""


def console_script(name: str) -> str:
    """The path of the installed console script ``name``.

    Looked for beside the running interpreter first (a virtual environment's ``bin``, where ``pip``
    wrote it for this very interpreter, whether or not that environment is activated), then on PATH.
    """
    if name not in SCRIPTS:
        raise ValueError(f"{name!r} is not one of gatewatch's console scripts {list(SCRIPTS)}")
    # Not resolved: a virtual environment's python links out of it, and its scripts sit beside the link.
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ScriptNotFound(
            f"{name} is not installed beside {sys.executable} nor on PATH: install gatewatch (pip install .)"
        )
    return found

"""How long a process of the namespace lab may live: as long as the test (or demo) that started it, and
never more than ``MAX_RUNTIME``, so a crashed run leaves nothing running for long."""

from __future__ import annotations

import ctypes
import signal

__all__ = ["MAX_RUNTIME", "die_with_parent"]

MAX_RUNTIME = 3600.0
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when the one that started it exits (best effort)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

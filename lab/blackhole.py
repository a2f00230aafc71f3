"""Blackholing a server address: SYNs from the affected networks vanish, so connects time out.

The way: a BPF socket filter on the listener that drops those sources only (``bpf.py``). Some kernels
refuse SO_ATTACH_FILTER to unprivileged users (seen on a hardened 6.18 kernel: EPERM even for a one-
instruction filter). Then the lab falls back to a listener whose accept queue is full and never drained:
SYNs are dropped for *everyone*, the clean vantage included, and a warning says so.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from .bpf import attach_source_drop_filter

__all__ = ["BLACKHOLE_ACCEPT_QUEUE", "BLACKHOLE_BPF", "FullAcceptQueue", "try_source_filter"]

log = logging.getLogger(__name__)

BLACKHOLE_BPF = "bpf"  # per source network, as the scenario says
BLACKHOLE_ACCEPT_QUEUE = "accept-queue"  # fallback: for every client
FILLER_SOURCE = "127.0.0.1"
MAX_FILLERS = 8
FILLER_TIMEOUT = 0.1


def try_source_filter(sock: socket.socket, cidrs: Iterable[str]) -> bool:
    """Attach the per-source drop filter; False (with a loud warning) when the kernel refuses it."""
    try:
        attach_source_drop_filter(sock, cidrs)
    except OSError as exc:
        log.warning(
            "lab blackhole: the kernel refused SO_ATTACH_FILTER (%s); falling back to a full accept "
            "queue, which drops SYNs from EVERY network, the clean vantage included",
            exc,
        )
        return False
    return True


class FullAcceptQueue:
    """A listener never accepted from, its one-slot queue filled: further SYNs get no answer."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self._fillers: list[socket.socket] = []

    def fill(self) -> None:
        """Blocking (up to FILLER_TIMEOUT once): run it in a thread."""
        self.listener.listen(0)
        address, port = self.listener.getsockname()
        for _ in range(MAX_FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(FILLER_TIMEOUT)
            try:
                filler.bind((FILLER_SOURCE, 0))
                filler.connect((address, port))
            except OSError:
                filler.close()  # this SYN was dropped: the queue is full
                return
            self._fillers.append(filler)
        raise OSError(f"the accept queue of {address}:{port} never filled up")

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        self.listener.close()

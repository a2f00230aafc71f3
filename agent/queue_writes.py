"""The pass's measurements written to the queue together: one SQLite transaction per window, not per URL.

A commit costs more than building the row (BEGIN, the pending count, COMMIT: ~0.1 ms of a URL's few), and
a pass measures dozens of URLs a second. So completed measurements wait here, in memory, at most
:data:`WRITE_WINDOW` seconds, and are committed together (:meth:`.MeasurementQueue.enqueue_many`); the pass
writes whatever waits when it ends, stops or is cancelled (:meth:`QueueWrites.flush`).

What a crash can cost: the measurements of the last window at most, none of them acknowledged by anyone
(nothing is uploaded before the pass has written them all), so nothing acknowledged is lost and, as the
rows keep their ``measurement_uid``, nothing is duplicated. The queue's bound holds as before: a
measurement that would pass ``max_unsent`` is refused when it is handed in (:class:`.QueueFull`), counting
the ones waiting here.
"""

from __future__ import annotations

import asyncio
import base64

from gatewatch.core.envelope import Envelope

from .queue import MeasurementQueue, QueuedWrite, QueueFull

__all__ = ["WRITE_WINDOW", "QueueWrites"]

WRITE_WINDOW = 0.2  # seconds a completed measurement may wait in memory before its commit


class QueueWrites:
    """Measurements handed in by a pass's workers, committed together (one event loop: no locks)."""

    def __init__(self, queue: MeasurementQueue, window: float = WRITE_WINDOW) -> None:
        self.queue = queue
        self.window = window
        self._waiting: list[QueuedWrite] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pending: int | None = None  # the queue's pending rows at the last commit (None: not read)
        self._waiting_pending = 0  # of those waiting here, the ones that will be pending (not local)

    def __len__(self) -> int:
        return len(self._waiting)

    def add(
        self, measurement_uid: str, payload: bytes, envelope: Envelope | None, *, local_only: bool
    ) -> None:
        """Hand in a measurement, committed within ``window`` seconds (or by :meth:`flush`). Raises
        :class:`QueueFull` now, as :meth:`.MeasurementQueue.enqueue` would, when ``max_unsent`` measurements
        already wait (those in the queue and those here)."""
        if envelope is not None and base64.b64decode(envelope.payload) != payload:
            raise ValueError("the envelope does not carry these payload bytes")
        if not local_only:
            if self._pending is None:
                self._pending = self.queue.pending_count()
            waiting = self._pending + self._waiting_pending
            if waiting >= self.queue.limits.max_unsent:
                raise QueueFull(
                    f"{waiting} measurements wait for upload (max_unsent={self.queue.limits.max_unsent})"
                )
        self._waiting.append((measurement_uid, payload, envelope, local_only))
        self._waiting_pending += not local_only
        if self.window <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> int:
        """Commit every measurement handed in so far, in one transaction; how many were added."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._waiting, self._waiting_pending = self._waiting, [], 0
        if not items:
            return 0
        self._pending = None  # read again at the next add: uploads and pruning change it in between
        return self.queue.enqueue_many(items)

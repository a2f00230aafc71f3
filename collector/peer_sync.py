"""Several collectors on one PostgreSQL: each keeps its in-memory attribution window (aggregate.py) in step
with what the others store, so that every collector behind a load balancer answers
``GET /api/v1/interference`` and exports the interference metrics alike.

How: each collector rebuilds its window from the store on start (interference_api.py), adds what it
ingests itself (an ingest hook), and every ``SYNC_INTERVAL`` seconds reads the keys of the rows stored since
its last look (by ``received_at``, indexed by migration 2), then the rows it does not hold yet, and adds
those without counting them (the collector that ingested a row counts it: the counters of all collectors
add up to the truth).

Two margins keep this exact. A row's ``received_at`` is taken before its transaction commits (and comes
from the clock of the collector that received it), so each look starts ``OVERLAP`` before the newest
``received_at`` already seen, and the uids of that overlap are remembered so that no row is added twice.
Rows younger than ``SETTLE`` are left for the next look, so that this collector's own rows have been
remembered by its ingest hook (which runs right after the commit) before they are read back.
Collectors' clocks must agree to well within ``OVERLAP`` (NTP; docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from .aggregate import InterferenceAggregate
from .store.base import StoredMeasurement, StoreError

__all__ = ["OVERLAP", "SETTLE", "SYNC_INTERVAL", "PeerSync", "SharedStore", "running"]

SYNC_INTERVAL = 2.0  # seconds between looks
SETTLE = timedelta(seconds=2)
OVERLAP = timedelta(seconds=60)
PAGE = 1_000
MAX_PAGES = 50  # per look: a backlog is worked off over several looks, never in one long stall

log = logging.getLogger(__name__)


@runtime_checkable
class SharedStore(Protocol):
    """A store several collectors write to (PostgreSQL); SQLite belongs to one process and has no need."""

    async def received_keys_after(
        self, after: tuple[datetime, str], before: datetime, started_since: datetime, limit: int
    ) -> list[tuple[datetime, str]]: ...

    async def received_rows(
        self, keys: Sequence[tuple[datetime, str]], started_since: datetime
    ) -> list[StoredMeasurement]: ...


class PeerSync:
    """Create it before the rebuild (rows received from then on are looked at), pass the rebuild's rows
    through :meth:`remembering`, register :meth:`remember` as an ingest hook, then run :meth:`run`."""

    def __init__(
        self,
        aggregate: InterferenceAggregate,
        store: SharedStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._aggregate = aggregate
        self._store = store
        self._clock = clock
        self._watermark = clock()  # the newest received_at looked at (or the creation time)
        self._seen: dict[str, datetime] = {}  # uid -> received_at, for rows within OVERLAP of the watermark
        self.added = 0  # rows of other collectors added so far

    def remember(self, rows: Iterable[StoredMeasurement]) -> None:
        """Rows the aggregate already holds (ingested here, or read by the rebuild)."""
        floor = self._watermark - OVERLAP
        for row in rows:
            if row.received_at >= floor:
                self._seen[row.measurement_uid] = row.received_at

    async def remembering(self, rows: AsyncIterable[StoredMeasurement]) -> AsyncIterator[StoredMeasurement]:
        async for row in rows:
            self.remember((row,))
            yield row

    async def step(self) -> int:
        """One look at the store; returns how many rows of other collectors were added."""
        now = self._clock()
        settings = self._aggregate.settings
        started_since = now - settings.window - settings.max_clock_skew
        after = (self._watermark - OVERLAP, "")
        added = 0
        for _ in range(MAX_PAGES):
            # Keys first: most of a look's keys are of rows already held (the overlap, this collector's
            # own), and only the others' rows are read whole.
            keys = await self._store.received_keys_after(after, now - SETTLE, started_since, PAGE)
            unseen = [key for key in keys if key[1] not in self._seen]
            if unseen:
                rows = await self._store.received_rows(unseen, started_since)
                added += self._aggregate.add_rows(rows, counted=False)
            for received_at, uid in keys:
                self._seen[uid] = received_at
            if keys:
                after = keys[-1]
                self._watermark = max(self._watermark, keys[-1][0])
            if len(keys) < PAGE:
                break
        floor = self._watermark - OVERLAP
        self._seen = {uid: at for uid, at in self._seen.items() if at >= floor}
        self.added += added
        return added

    async def run(self) -> None:
        """Look every ``SYNC_INTERVAL`` seconds until cancelled; a store error is logged and retried."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                await self.step()
            except StoreError as exc:
                log.warning("peer sync: store unavailable", extra={"error": str(exc)})


@contextlib.asynccontextmanager
async def running(sync: PeerSync) -> AsyncIterator[None]:
    task = asyncio.create_task(sync.run(), name="gatewatch-peer-sync")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

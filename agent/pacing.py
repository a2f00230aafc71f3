"""How a pass paces its measurements: how many use the network at once, per host, how many are held in
memory, for how long in all, and how often the cyclic garbage collector runs meanwhile.

A measurement uses the network until its last connection is closed; it then waits for late DNS replies
(the probe's linger, a quarter of a second), its control and its turn to be judged and queued, using no
connection. ``concurrency`` workers each start a URL, wait for its network part to end and start the
next, so ``concurrency`` measurements are on the network at once while the ones that finish wait beside
them, at most :data:`IN_FLIGHT_PER_SLOT` x ``concurrency`` in memory in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["IN_FLIGHT_PER_SLOT", "PASS_GC_THRESHOLD", "Pacer", "fewer_collections"]

# Measurements in memory at once, per unit of ``concurrency``: ``concurrency`` of them use the network, the
# others have closed their connections and wait for late DNS replies, their control, or their turn to be
# judged and queued.
IN_FLIGHT_PER_SLOT = 4
# The cyclic garbage collector's first threshold while a pass measures (Python's default: 700 allocations).
# Each measurement allocates thousands of short-lived objects (records, dicts, strings) that reference
# counting frees; at the default the collector ran every few URLs, re-walking every young object.
PASS_GC_THRESHOLD = 20_000


class Entry(Protocol):
    @property
    def host(self) -> str: ...


E = TypeVar("E", bound=Entry)


class _HostSlot:
    """The ``per_host`` limit of one host, and how many workers hold or wait for it."""

    def __init__(self, per_host: int) -> None:
        self.semaphore = asyncio.Semaphore(per_host)
        self.users = 0


class Pacer(Generic[E]):
    """Runs ``measure`` over the entries ``next_entry`` gives (None: no more, or the pass stopped).
    ``measure`` calls its second argument once the entry's network part is done (if it never does, the
    end of the whole measurement counts) and raises for nothing but bugs, which the caller logs."""

    def __init__(
        self,
        next_entry: Callable[[], E | None],
        measure: Callable[[E, Callable[[], None]], Awaitable[None]],
        *,
        concurrency: int,
        per_host: int,
    ) -> None:
        self.next_entry, self.measure = next_entry, measure
        self.concurrency, self.per_host = max(1, concurrency), per_host
        # Per host: its semaphore and how many workers hold or wait for it. Dropped when that count is 0,
        # so that a pass over thousands of hosts does not keep a semaphore for each (the memory goal).
        self.host_slots: dict[str, _HostSlot] = {}
        self.in_flight = asyncio.Semaphore(IN_FLIGHT_PER_SLOT * self.concurrency)
        self.measuring: set[asyncio.Task[None]] = set()  # started, not yet ended

    async def run(self, max_runtime: float | None) -> bool:
        """Measure until there is nothing left to start and every measurement has ended; False when
        ``max_runtime`` seconds ran out first. Measurements unfinished then (or when this is cancelled)
        are cancelled: none is half-written, as none has been queued."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        everything = asyncio.ensure_future(self._every_measurement(workers))
        try:
            _, unfinished = await asyncio.wait({everything}, timeout=max_runtime)
            return not unfinished
        finally:
            tasks = [everything, *workers, *self.measuring]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _every_measurement(self, workers: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*workers)
        while self.measuring:  # each round waits for at least one to end: bounded by the number started
            await asyncio.wait(set(self.measuring))

    async def _worker(self) -> None:
        """Start measurements one after the other, each once the previous one's network part is done."""
        while True:  # ends when next_entry has none: each round takes one entry
            await self.in_flight.acquire()
            entry = self.next_entry()
            if entry is None:
                self.in_flight.release()
                return
            slot = self.host_slots.get(entry.host)
            if slot is None:
                slot = self.host_slots[entry.host] = _HostSlot(self.per_host)
            slot.users += 1
            try:
                async with slot.semaphore:  # per host: held while the measurement uses the network
                    await self._start(entry)
            finally:
                slot.users -= 1
                if not slot.users:
                    del self.host_slots[entry.host]

    async def _start(self, entry: E) -> None:
        """Start measuring ``entry`` in a task of its own; return when its network part is done (or the
        whole measurement is, for a measure function that does not say)."""
        network_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def release() -> None:
            if not network_done.done():
                network_done.set_result(None)

        task = asyncio.ensure_future(self.measure(entry, release))
        self.measuring.add(task)
        task.add_done_callback(self._ended)
        task.add_done_callback(lambda _: release())
        await network_done

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.measuring.discard(task)
        self.in_flight.release()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cycles less often while the pass measures (see PASS_GC_THRESHOLD), as before after it."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], PASS_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)

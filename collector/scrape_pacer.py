"""At most one /metrics answer per interval: a scraper that never waits cannot take the loop from ingest.

Each answer costs the event loop an HTTP request and response whatever the page costs to render (a
constant 38 kB body served from memory is ~0.1-0.3 ms of the loop), so a client scraping back to back
(thousands of scrapes a second) slows uploads by itself: bench/scrape_latency.py measured ingest p50 x1.2
and p99 x2.1 with a *constant* page. Prometheus scrapes a target every few seconds at most (15 s in
deploy/prometheus), so answers are spaced by ``metrics_min_interval_seconds`` (0.1 s by default, a small
fraction of any scrape interval): a scrape that arrives sooner after the previous answer waits, costing
nothing while it waits, and every scrape that arrives meanwhile joins the same wave, answered at once
when the interval has passed (one render serves them all: the page is cached, collector/exposition.py).
A scrape that comes after a quiet interval is answered immediately. 0 turns the pacing off.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["ScrapePacer"]


class ScrapePacer:
    """Waves of answers at least ``interval`` seconds apart (per page, on the event loop's thread)."""

    def __init__(self) -> None:
        self._last = -float("inf")  # time.monotonic() of the last wave
        self._wave: asyncio.Future[None] | None = None  # the next wave, when a scrape waits for it

    async def wait(self, interval: float) -> None:
        """Return when this scrape may be answered: now if the last answer is ``interval`` seconds old
        (or ``interval`` is 0), else with the next wave."""
        if interval <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._wave is not None and self._wave.get_loop() is not loop:
            self._wave = None  # left behind by a loop that ended (tests run one loop each)
        if self._wave is None:
            now = time.monotonic()
            due = self._last + interval
            if now >= due:
                self._last = now
                return
            self._wave = loop.create_future()
            loop.call_later(due - now, self._release, self._wave)
        # shielded: a scraper that leaves does not cancel the wave the others wait for
        await asyncio.shield(self._wave)

    def _release(self, wave: asyncio.Future[None]) -> None:
        if self._wave is wave:
            self._wave = None
        self._last = time.monotonic()
        if not wave.done():
            wave.set_result(None)

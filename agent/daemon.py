"""Passes on a schedule (for systemd): an interval plus random jitter, so that agents of one network do
not all measure at the same minute, and a new pass soon after the machine changes network (a new
vantage point; each pass re-asks the collector where it is).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from .netinfo import NetworkView

__all__ = ["run_schedule"]

log = logging.getLogger(__name__)

MIN_GAP = 300.0  # never two passes closer than this, however often the network flaps
NETWORK_POLL = 60.0


async def run_schedule(
    one_pass: Callable[[], Awaitable[str | None]],
    *,
    interval: float,
    jitter: float,
    observe: Callable[[], NetworkView],
    max_passes: int | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    min_gap: float = MIN_GAP,
    poll: float = NETWORK_POLL,
) -> int:
    """Run ``one_pass`` (which returns its stop reason) until cancelled or ``max_passes`` ran.
    Returns the number of passes run."""
    rng = rng or random.SystemRandom()
    passes = 0
    while max_passes is None or passes < max_passes:
        started = time.monotonic()
        stop_reason = await one_pass()
        passes += 1
        if max_passes is not None and passes >= max_passes:
            break
        wait = interval + rng.uniform(0, jitter)
        if stop_reason == "network_changed":
            wait = min_gap
        log.info("next pass in %.0f s", wait, extra={"fields": {"event": "sleeping", "seconds": round(wait)}})
        before = observe().signature
        deadline = started + max(wait, min_gap)
        while (remaining := deadline - time.monotonic()) > 0:
            await sleep(min(poll, remaining))
            if observe().signature != before and time.monotonic() - started >= min_gap:
                log.info("network changed", extra={"fields": {"event": "network_changed"}})
                break
    return passes

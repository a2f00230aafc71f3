"""Passes on a schedule (for systemd): an interval plus random jitter, so that agents of one network do
not all measure at the same minute, and a new pass soon after the machine changes network (a new
vantage point; each pass re-asks the collector where it is).

Uploads do not follow a pass at once: each waits a random delay drawn in ``upload_delay`` (agent.toml,
5 to 60 minutes by default), so that the gateway does not see the probes' traffic and then, right after,
a connection to the collector (or to Tor) that it could pair with the batch's arrival. A pass that comes
due before an owed upload does not push that upload later: it is made at the owed time, after the pass.
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
    upload: Callable[[], Awaitable[object]] | None = None,
    upload_delay: tuple[float, float] = (0.0, 0.0),
    max_passes: int | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    min_gap: float = MIN_GAP,
    poll: float = NETWORK_POLL,
) -> int:
    """Run ``one_pass`` (which returns its stop reason) until cancelled or ``max_passes`` ran, and
    ``upload`` (when given) a random ``upload_delay`` after each pass; after the last pass, the owed upload
    is made before returning. Returns the number of passes run."""
    rng = rng or random.SystemRandom()
    passes = 0
    upload_at: float | None = None  # monotonic time of the owed upload
    while max_passes is None or passes < max_passes:
        started = time.monotonic()
        stop_reason = await one_pass()
        passes += 1
        if upload is not None:
            due = time.monotonic() + rng.uniform(*upload_delay)
            upload_at = due if upload_at is None else min(upload_at, due)
            _log_upload_wait(upload_at)
        if max_passes is not None and passes >= max_passes:
            if upload_at is not None and upload is not None:
                while (remaining := upload_at - time.monotonic()) > 0:
                    await sleep(min(poll, remaining))
                await _upload(upload)
            break
        wait = interval + rng.uniform(0, jitter)
        if stop_reason == "network_changed":
            wait = min_gap
        log.info("next pass in %.0f s", wait, extra={"fields": {"event": "sleeping", "seconds": round(wait)}})
        before = observe().signature
        deadline = started + max(wait, min_gap)
        while (remaining := deadline - time.monotonic()) > 0:
            until_upload = upload_at - time.monotonic() if upload_at is not None else remaining
            await sleep(max(0.0, min(poll, remaining, until_upload)))
            if upload is not None and upload_at is not None and time.monotonic() >= upload_at:
                upload_at = None
                await _upload(upload)
            if observe().signature != before and time.monotonic() - started >= min_gap:
                log.info("network changed", extra={"fields": {"event": "network_changed"}})
                break
    return passes


def _log_upload_wait(upload_at: float) -> None:
    seconds = round(max(0.0, upload_at - time.monotonic()))
    log.info("upload in %d s", seconds, extra={"fields": {"event": "upload_waiting", "seconds": seconds}})


async def _upload(upload: Callable[[], Awaitable[object]]) -> None:
    try:
        await upload()
    except Exception:  # a bug in one upload must not end the schedule: what waits stays queued
        log.exception("upload failed", extra={"fields": {"event": "upload_failed"}})

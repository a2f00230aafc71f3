"""Passes on a schedule (for systemd): an interval plus random jitter, so that agents of one network do
not all measure at the same minute, and a new pass soon after the machine changes network (a new
vantage point; each pass re-asks the collector where it is).

Two things make a block switched on at a national gateway seen within minutes rather than hours, for the
same total load on the volunteer's line:

- **slices**: a pass over the test list is spread over its interval in ``slices`` small paced passes
  (each URL falls in one slice, by a hash salted per agent, so agents of a country measure a URL at
  different moments): a short burst every ``interval / slices`` instead of one long one every ``interval``;
- **confirmation requests**: between slices the daemon polls the collector's list of URLs that just showed
  an anomaly in the country (about once a minute, with jitter); ``confirm`` measures those few at once and
  uploads at once, within an hourly budget (see ``ConfirmationBudget``).

Uploads of a pass do not follow it at once: each waits a random delay drawn in ``upload_delay`` (agent.toml,
5 to 60 minutes by default), so that the gateway does not see the probes' traffic and then, right after,
a connection to the collector (or to Tor) that it could pair with the batch's arrival. A pass that comes
due before an owed upload does not push that upload later: it is made at the owed time, after the pass.
(Confirmation measurements upload at once: their worth is in their speed, and they are few.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .netinfo import NetworkView

__all__ = ["CONFIRM_POLL", "ConfirmationBudget", "SliceCursor", "in_slice", "run_schedule"]

log = logging.getLogger(__name__)

MIN_GAP = 300.0  # never two passes closer than this, however often the network flaps
NETWORK_POLL = 60.0
CONFIRM_POLL = 60.0  # ask for confirmation requests about this often (plus or minus a quarter, at random)
Entry = TypeVar("Entry")


def in_slice(url: str, index: int, slices: int, salt: str = "") -> bool:
    """Whether ``url`` is measured in slice ``index`` of ``slices`` (a stable, salted hash of the URL)."""
    if slices <= 1:
        return True
    digest = hashlib.sha256(f"{salt}\0{url}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % slices == index % slices


@dataclass
class SliceCursor:
    """Which slice of the test list the next pass measures: each pass takes the next one."""

    slices: int = 1
    salt: str = field(default_factory=lambda: secrets.token_hex(8))  # this agent's own order
    index: int = 0

    def take(self, entries: Sequence[Entry], url: Callable[[Entry], str]) -> list[Entry]:
        chosen = [e for e in entries if in_slice(url(e), self.index, self.slices, self.salt)]
        self.index = (self.index + 1) % max(self.slices, 1)
        return chosen


@dataclass
class ConfirmationBudget:
    """How many confirmation URLs a volunteer's agent measures: at most ``per_hour`` in any hour, and never
    the same URL twice within ``same_url_gap`` seconds."""

    per_hour: int = 30
    same_url_gap: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _spent: list[float] = field(default_factory=list)
    _measured: dict[str, float] = field(default_factory=dict)

    def take(self, urls: Sequence[str]) -> list[str]:
        """The URLs of ``urls`` to measure now (charged to the budget)."""
        now = self.clock()
        self._spent = [t for t in self._spent if now - t < 3600.0]
        self._measured = {u: t for u, t in self._measured.items() if now - t < self.same_url_gap}
        chosen: list[str] = []
        for url in dict.fromkeys(urls):
            if len(self._spent) >= self.per_hour:
                break
            if url in self._measured:
                continue
            chosen.append(url)
            self._spent.append(now)
            self._measured[url] = now
        return chosen


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
    confirm: Callable[[], Awaitable[object]] | None = None,
    confirm_every: float = CONFIRM_POLL,
) -> int:
    """Run ``one_pass`` (which returns its stop reason) until cancelled or ``max_passes`` ran; ``upload``
    (when given) a random ``upload_delay`` after each pass (after the last pass, the owed upload is made
    before returning); between passes call ``confirm`` about every ``confirm_every`` seconds (jittered),
    when given. Returns the number of passes run."""
    rng = rng or random.SystemRandom()
    passes = 0
    upload_at: float | None = None  # monotonic time of the owed upload

    def next_confirm() -> float:
        return time.monotonic() + confirm_every * rng.uniform(0.75, 1.25)

    confirm_at = next_confirm()
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
                await _guarded(upload, "upload_failed")
            break
        wait = interval + rng.uniform(0, jitter)
        if stop_reason == "network_changed":
            wait = min_gap
        log.info("next pass in %.0f s", wait, extra={"fields": {"event": "sleeping", "seconds": round(wait)}})
        before = observe().signature
        deadline = started + max(wait, min_gap)
        while (remaining := deadline - time.monotonic()) > 0:
            now = time.monotonic()
            until_upload = upload_at - now if upload_at is not None else remaining
            until_confirm = confirm_at - now if confirm is not None else remaining
            await sleep(max(0.0, min(poll, remaining, until_upload, until_confirm)))
            if upload is not None and upload_at is not None and time.monotonic() >= upload_at:
                upload_at = None
                await _guarded(upload, "upload_failed")
            if confirm is not None and time.monotonic() >= confirm_at:
                await _guarded(confirm, "confirm_failed")
                confirm_at = next_confirm()
            if observe().signature != before and time.monotonic() - started >= min_gap:
                log.info("network changed", extra={"fields": {"event": "network_changed"}})
                break
    return passes


def _log_upload_wait(upload_at: float) -> None:
    seconds = round(max(0.0, upload_at - time.monotonic()))
    log.info("upload in %d s", seconds, extra={"fields": {"event": "upload_waiting", "seconds": seconds}})


async def _guarded(call: Callable[[], Awaitable[object]], event: str) -> None:
    """An upload or a confirmation poll: a bug or an unreachable collector must not end the schedule (what
    waits stays queued)."""
    try:
        await call()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(event.replace("_", " "), extra={"fields": {"event": event}})

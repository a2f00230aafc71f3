"""Ingest's checks (``ingest_checks.py``: signature, parse, times, verdict) in worker processes: the
collector's other cores, free of its interpreter lock.

On one interpreter, Ed25519 verification (which releases the lock) and the pure-Python parse and
analysis still take turns with the event loop: on two cores, ingest reached ~0.3x the rate of bare
verification. Here a batch is cut into one chunk per worker process; each worker verifies and judges its
chunk exactly as ``check_batch`` does and sends back the items (the signed bytes, the store row). What a
worker cannot conclude alone is judged again here, from scratch, by the same code: a measurement whose
vouched control is not accepted (this process's own control cache may still have one, and the refusal is
logged and counted here) and one whose analysis failed (logged here with its traceback). So the stored
verdicts are the in-process ones, item for item (tests/collector/test_ingest_processes.py).

Failure semantics: a worker that dies (killed, out of memory) fails the batches it was checking with a
503 and ``Retry-After`` (the checks come before the store: nothing of them was stored or acknowledged),
and the pool is replaced for the next batch. Workers are started by a fork server that imported this
module once (each worker starts in milliseconds with the fingerprints already built) and are shut down
with the application; a worker whose parent disappears exits with it (multiprocessing's pipes close).

Setting ``check_processes`` (``settings.py``): 0 (default) off; -1 one worker per core, at most
:data:`MAX_AUTO_PROCESSES`, and none on a one-core machine (a Raspberry Pi Zero: the checks stay in the
collector's own threads); N exactly N. Off by default because it did not pay where it was measured
(``bench/ingest.py --check-processes``, 2 shared cores, medians: batch 100 ~0.20-0.26x bare verification
with two workers against ~0.29-0.30x in threads; batch 10 ~0.13x against ~0.18x): the workers' and the
collector's CPU together exceed two cores' worth (a chunk costs ~1.5x the CPU in a worker that it costs
alone, and the collector still parses, stores and answers), and each hand-over adds latency a batch of 10
feels. Measured again (2026-12-06, 5 rounds alternated, the other core mostly busy): batch 10 0.14x with two
workers against 0.20x in threads, identified and token alike; batch 100 identified 0.37x against 0.32x but
token 0.26x against 0.37x. It is for machines with cores to spare.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from gatewatch.analysis import load_default_fingerprints
from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.core.batch_token import TokenParts
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import ANALYSIS_ERROR, STORE_UNAVAILABLE

from .appkeys import GEO_KEY, SETTINGS_KEY, GeoLookup
from .geoip import GeoDB, GeoInfo
from .ingest_checks import Item, Judging, judge_items, verify_items
from .request_body import RequestRefused
from .settings import Settings
from .vouched_control import CONTROL_JUDGE_KEY, ControlJudge, ControlSigner, Vouching

__all__ = ["CHECK_POOL_KEY", "MAX_AUTO_PROCESSES", "CheckPool", "check_pool_ctx", "process_count"]

MAX_AUTO_PROCESSES = 4
MIN_CHUNK = 5  # fewer items per worker than this cost more to hand over than they save
log = logging.getLogger(__name__)


def process_count(setting: int, cores: int | None = None) -> int:
    """How many worker processes ``check_processes`` asks for on a machine with ``cores`` cores."""
    if setting >= 0:
        return setting
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return 0 if cores <= 1 else min(cores, MAX_AUTO_PROCESSES)


# ---- in a worker process ------------------------------------------------------------------------------


@dataclass
class _WorkerState:
    settings: Settings
    fingerprints: FingerprintDB
    geodb: GeoLookup | None
    judge_control: ControlJudge | None


_state: _WorkerState | None = None


class _JudgeHere(Exception):
    """Raised in a worker for a control it cannot conclude on: the item is judged again by the parent."""


@dataclass(frozen=True)
class _VouchedOnly(ControlJudge):
    """The worker's control check: a vouched control or nothing (the parent has the control cache)."""

    def __call__(self, m: Measurement, now: datetime) -> Vouching:
        decided = super().__call__(m, now)
        if decided.source != "vouched":
            raise _JudgeHere
        return decided


def _no_own_control(url: str) -> None:
    return None


# The parent's control signer as it crosses to a worker: secret, period, accepted periods.
SignerParts = tuple[bytes, float, int]


def _start_worker(settings: Settings, signer: SignerParts | None) -> None:
    global _state
    logging.disable(logging.CRITICAL)  # what a worker cannot conclude is redone (and logged) by the parent
    has_geo = settings.asn_db or settings.country_db
    geodb = GeoDB.load(settings.asn_db, settings.country_db) if has_geo else None
    judge = None
    if signer is not None:
        max_age = timedelta(seconds=settings.control_max_age_seconds)
        judge = _VouchedOnly(ControlSigner(*signer), max_age, _no_own_control)
    _state = _WorkerState(settings, load_default_fingerprints(), geodb, judge)


def _check_chunk(
    raw: Sequence[Any], first_index: int, geo: GeoInfo | None, now: datetime, token: TokenParts | None
) -> list[Item]:
    """``check_batch`` of one chunk; an item left ``verified`` without a row is for the parent to judge.
    With the batch's ``token``, only its ephemeral key's items are judged, and their rows carry the token
    as in the collector's own threads (not added by the parent afterwards: a copy of each row there)."""
    state = _state
    if state is None:
        raise RuntimeError("worker not started")
    items = verify_items(raw, first_index)
    judging = Judging(state.settings, state.fingerprints, geo, now, state.geodb, state.judge_control, token)
    ephemeral = token.ephemeral_public_key if token is not None else None
    judge_items([i for i in items if ephemeral is None or i.public_key == ephemeral], judging)
    for item in items:
        if item.row is not None and ANALYSIS_ERROR in item.row.flags:
            item.row = None  # judged again by the parent: its own control, its log, its failure count
    return items


# ---- in the collector ---------------------------------------------------------------------------------


def _crossable(value: Any) -> dict[str, str] | None:
    """What of an item crosses to a worker: an object of strings as it is; anything else, which no
    envelope can be, as None (rejected ``invalid_envelope`` alike, without pickling, e.g., deep nesting)."""
    if type(value) is dict and all(type(v) is str for v in value.values()):
        return value
    return None


class CheckPool:
    """The collector's worker processes for ingest's checks (one pool per application)."""

    def __init__(self, processes: int, settings: Settings, signer: SignerParts | None) -> None:
        self.processes = processes
        self._settings = settings
        self._signer = signer
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        # The fork server imports this module once (~0.3 s): each worker is forked from it ready to check.
        context.set_forkserver_preload([__name__])  # (has effect before the fork server's first start)
        return ProcessPoolExecutor(
            self.processes,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._settings, self._signer),
        )

    async def start(self) -> None:
        """Start every worker now (not on the first upload)."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, os.getpid) for _ in range(self.processes))
        )

    def worker_pids(self) -> list[int]:
        """The workers' process ids (for a benchmark's CPU accounting and the tests)."""
        return [p.pid for p in list(getattr(self._executor, "_processes", {}).values()) if p.pid is not None]

    async def check(
        self, raw: Sequence[Any], geo: GeoInfo | None, now: datetime, token: TokenParts | None
    ) -> list[Item]:
        """Every item verified, and judged where the workers can (see :func:`_check_chunk`). Raises
        :class:`RequestRefused` 503 when a worker died meanwhile (the pool is replaced)."""
        size = max(MIN_CHUNK, math.ceil(len(raw) / self.processes))
        raw = [_crossable(value) for value in raw]
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            chunks = await asyncio.gather(*(
                loop.run_in_executor(executor, _check_chunk, raw[s : s + size], s, geo, now, token)
                for s in range(0, len(raw), size)
            ))  # fmt: skip
        except BrokenProcessPool:
            log.error("an ingest worker process died: batch refused, workers restarted")
            if self._executor is executor:
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise RequestRefused(
                503, STORE_UNAVAILABLE, "try again later", STORE_UNAVAILABLE, {"Retry-After": "5"}
            ) from None
        return [item for chunk in chunks for item in chunk]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


CHECK_POOL_KEY = web.AppKey("gatewatch_check_pool", CheckPool)


async def check_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool, when ``check_processes`` asks for one and the workers can rebuild what judging uses (not
    when a caller handed the application its own geolocation database)."""
    settings = app[SETTINGS_KEY]
    processes = process_count(settings.check_processes)
    own_geo = app[GEO_KEY] is not None and not (settings.asn_db or settings.country_db)
    if processes == 0 or own_geo:
        yield
        return
    judge = app.get(CONTROL_JUDGE_KEY)
    signer = judge.signer if judge is not None else None
    parts = (signer.secret, signer.period_seconds, signer.accepted_periods) if signer is not None else None
    pool = CheckPool(processes, settings, parts)
    try:
        await pool.start()
    except Exception:
        pool.close()
        raise
    app[CHECK_POOL_KEY] = pool
    try:
        yield
    finally:
        await asyncio.to_thread(pool.close)

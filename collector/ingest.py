"""``POST /api/v1/measurements``: verify, validate, re-judge and durably store a batch of measurements.

Each item is answered on its own (accepted, duplicate, or rejected with a machine-readable reason); only a
request that cannot be read as a batch at all is refused as a whole, with a 4xx and a reason. An item is
acknowledged only once the store has committed it.

What is re-derived, and what is not: the stored verdict is the collector's own, from the same pure
analysis the agent runs, never the agent's ``test_keys.verdict``. Before that analysis, every DNS answer's
``bogon`` is recomputed (with the operator's ``control_allow_net`` as the only non-public ranges that
count as real) and its ``asn`` is looked up in the collector's geolocation databases (left empty without
them), so an agent cannot hide a censor's private-range answer or make one look like the site's network.
The raw observations themselves (addresses, failures, timings, bodies' hashes) and the control the agent
compared against (``test_keys.control``) are the agent's statements and are judged as given. The stored
payload stays the exact bytes that were signed.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gatewatch.core.vocabulary import (
    BAD_SIGNATURE,
    BATCH_TOO_LARGE,
    DOUBLE_SPEND,
    INTERNAL_ERROR,
    INVALID_JSON,
    INVALID_REQUEST,
    RATE_LIMITED,
    REPLAYED_BATCH,
    STORE_UNAVAILABLE,
    UID_CONFLICT,
    UNSTORABLE,
    UNSUPPORTED_MEDIA_TYPE,
)
from gatewatch.core.wire import IngestResponse

from . import batch_auth
from .appkeys import (
    FINGERPRINTS_KEY,
    GEO_KEY,
    INGEST_HOOKS_KEY,
    METRICS_KEY,
    RATE_LIMIT_KEY,
    SETTINGS_KEY,
    STORE_KEY,
)
from .batch_auth import BATCH_AUTH_KEY, REPLAYED_KEY, count_batch
from .client_address import client_address
from .geoip import GeoInfo
from .ingest_checks import Item, Judging, check_batch, judge_items
from .ingest_processes import CHECK_POOL_KEY, check_pool_ctx
from .metrics import IngestMetrics, item_reason_label
from .ratelimit import retry_after_seconds
from .request_body import UPLOAD_SLOTS_KEY, RequestRefused, UploadSlots, read_body
from .responses import model_response
from .store.base import DoubleSpend, StoredMeasurement, StoreError, UnstorableError
from .vouched_control import CONTROL_JUDGE_KEY

__all__ = [
    "INGEST_PATH",
    "RequestRefused",
    "add_ingest_routes",
]

INGEST_PATH = "/api/v1/measurements"
VERIFIER_THREADS = 2
# Bodies up to this size are parsed on the event loop (~0.2 ms of JSON, about what handing it to a thread and
# back costs); larger ones on a worker thread.
INLINE_JSON_BYTES = 64 * 1024
log = logging.getLogger(__name__)


def _batch(body: bytes, max_batch: int) -> tuple[list[Any], Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # also bad UTF-8, absurd nesting, ints beyond the digit limit
        raise RequestRefused(400, INVALID_JSON, "the body is not JSON", "bad_request") from None
    if not isinstance(document, dict) or set(document) - {"token"} != {"measurements"}:
        raise RequestRefused(400, INVALID_REQUEST, 'expected {"measurements": [...]}', "bad_request")
    items = document["measurements"]
    if not isinstance(items, list):
        raise RequestRefused(400, INVALID_REQUEST, '"measurements" must be a list', "bad_request")
    if len(items) > max_batch:
        raise RequestRefused(400, BATCH_TOO_LARGE, f"at most {max_batch} measurements", "bad_request")
    return items, document.get("token")


def _claimed_keys(raw: Sequence[Any]) -> set[bytes]:
    """The public keys the items of an identified batch claim (not yet verified)."""
    keys = set()
    for item in raw:
        claimed = item.get("public_key") if isinstance(item, dict) else None
        if isinstance(claimed, str) and len(claimed) <= 64:
            try:
                keys.add(base64.b64decode(claimed, validate=True))
            except ValueError:  # binascii.Error too: the item's own check rejects it
                pass
    return keys


def _rate_limit(request: web.Request, items: Sequence[Item]) -> None:
    """Charge each key that signed something in this batch. Only verified keys are charged, so nobody can
    exhaust another agent's allowance by sending its public key with garbage signatures."""
    buckets = request.app[RATE_LIMIT_KEY]
    keys = {item.public_key for item in items if item.status == "verified"}
    _refuse_after(max((buckets.take(key) for key in keys), default=0.0))


def _rate_limit_early(request: web.Request, raw: Sequence[Any]) -> None:
    """Before any verification or judging: refuse a batch when a key it claims has no allowance left now
    (nothing is spent; a forged claim of that key would be refused by the key's own limit anyway), so that
    an over-limit key costs the collector no CPU."""
    buckets = request.app[RATE_LIMIT_KEY]
    _refuse_after(max((buckets.due(key) for key in _claimed_keys(raw)), default=0.0))


def _refuse_after(wait: float) -> None:
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise RequestRefused(
            429, RATE_LIMITED, f"retry in {seconds} s", RATE_LIMITED, {"Retry-After": str(seconds)}
        )


def _connection_geo(request: web.Request) -> GeoInfo | None:
    """The submitting client's network. The address is looked up and dropped here: it is not returned,
    kept, or logged."""
    geo = request.app[GEO_KEY]
    address = client_address(request)
    if geo is None or not address:
        return None
    return geo.lookup(address)


async def _insert(request: web.Request, pending: Sequence[Item], metrics: IngestMetrics) -> list[bool]:
    started = time.perf_counter()
    auth = request[BATCH_AUTH_KEY]
    try:
        outcome = await request.app[STORE_KEY].insert_batch(
            [item.row for item in pending if item.row is not None],
            # With a token the key is the batch's ephemeral key, never a long-term one.
            [(item.signature, item.public_key) for item in pending],
            auth.spend,
        )
        request[REPLAYED_KEY] = request[REPLAYED_KEY] or outcome.replayed
        return outcome.inserted
    except DoubleSpend:
        count_batch(request, DOUBLE_SPEND)
        raise RequestRefused(
            409, DOUBLE_SPEND, "this token was spent on another batch", "token_refused"
        ) from None
    except StoreError as exc:
        log.error("store insert failed", extra={"error": str(exc)})
        raise RequestRefused(
            503, STORE_UNAVAILABLE, "try again later", STORE_UNAVAILABLE, {"Retry-After": "5"}
        ) from None
    finally:
        metrics.store_seconds.labels(operation="insert").observe(time.perf_counter() - started)


async def _store(
    request: web.Request, items: Sequence[Item], metrics: IngestMetrics
) -> list[StoredMeasurement]:
    pending = [item for item in items if item.row is not None]
    if not pending:
        return []
    try:
        outcomes: list[tuple[Item, bool]] = list(
            zip(pending, await _insert(request, pending, metrics), strict=True)
        )
    except UnstorableError:
        # Some row holds what the store cannot take, and the batch was rolled back. Each item alone shows
        # which: only that one is rejected, so one bad item cannot block an agent's queue (a 503 would be
        # retried forever). Rare, so the cost of one commit per item is acceptable here.
        outcomes = []
        for item in pending:
            try:
                (new,) = await _insert(request, [item], metrics)
            except UnstorableError:
                # No detail logged: the store's message quotes the row, which may hold addresses.
                log.warning("unstorable measurement", extra={"measurement_uid": item.measurement_uid})
                item.reject(UNSTORABLE)
                continue
            outcomes.append((item, new))
    known = [item.measurement_uid for item, new in outcomes if not new and item.measurement_uid]
    stored_payloads = await _stored_payloads(request, known) if known else {}
    new_rows = []
    for item, new in outcomes:
        if new:
            item.status = "accepted"
            if item.row is not None:
                new_rows.append(item.row)
        elif stored_payloads.get(item.measurement_uid or "") == item.payload:
            item.status = "duplicate"  # the same signed bytes again: a replay, e.g. after a lost answer
        else:
            item.reject(UID_CONFLICT)  # another measurement under a stored uid: this one was never stored
    return new_rows


async def _stored_payloads(request: web.Request, uids: Sequence[str]) -> dict[str, bytes]:
    try:
        return await request.app[STORE_KEY].stored_payloads(uids)
    except StoreError as exc:
        log.error("store lookup failed", extra={"error": str(exc)})
        raise RequestRefused(
            503, STORE_UNAVAILABLE, "try again later", STORE_UNAVAILABLE, {"Retry-After": "5"}
        ) from None


async def _run_hooks(request: web.Request, rows: Sequence[StoredMeasurement]) -> None:
    for hook in request.app[INGEST_HOOKS_KEY]:
        try:
            result = hook(rows)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the rows are committed: a failing consumer must not turn that into an error
            log.exception("ingest hook failed", extra={"hook": getattr(hook, "__qualname__", repr(hook))})


def _count(metrics: IngestMetrics, items: Sequence[Item]) -> None:
    # One labels() and inc() per outcome of the batch, not per item.
    outcomes = Counter(
        (item.status, item_reason_label(item.reason or "") if item.status == "rejected" else "")
        for item in items
    )
    for (result, reason), count in outcomes.items():
        metrics.items.labels(result=result, reason=reason).inc(count)
    if any(item.status == "accepted" for item in items):
        metrics.last_accepted.set_to_current_time()


async def _ingest(request: web.Request, metrics: IngestMetrics) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if request.content_type != "application/json":
        raise RequestRefused(415, UNSUPPORTED_MEDIA_TYPE, "send application/json", UNSUPPORTED_MEDIA_TYPE)
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
    if len(body) <= INLINE_JSON_BYTES:  # a few items: parsing costs less than a hop to a thread and back
        raw, token = _batch(body, settings.max_batch)
    else:  # megabytes of JSON: off the loop
        raw, token = await asyncio.to_thread(_batch, body, settings.max_batch)
    # The token first: a batch it refuses costs no verification.
    auth = await _authorise(request, token)
    judging = Judging(
        settings,
        request.app[FINGERPRINTS_KEY],
        _connection_geo(request),
        datetime.now(UTC),
        request.app[GEO_KEY],
        request.app.get(CONTROL_JUDGE_KEY),
        auth.token,
    )
    ephemeral = auth.token.ephemeral_public_key if auth.token is not None else None
    if ephemeral is None:
        _rate_limit_early(request, raw)
    pool = request.app.get(CHECK_POOL_KEY)
    if pool is not None:  # verified and judged in worker processes; what they left, here
        items = await pool.check(raw, judging.geo, judging.now, auth.token)
        failures = await _judge_left(items, judging, ephemeral)
        digest = batch_auth.batch_digest(raw) if auth.token is not None else b""
    else:
        items, failures = await asyncio.to_thread(
            check_batch,
            raw,
            judging,
            request.app[VERIFIERS_KEY],
            (lambda key: key == ephemeral) if ephemeral is not None else (lambda key: True),
        )  # with a token, each item hashed for the spend too
        digest = batch_auth.digest_of_items(item.digest for item in items) if auth.token is not None else b""
    auth = request[BATCH_AUTH_KEY] = auth.with_digest(digest)
    _check_keys(request, auth, items)
    _rate_limit(request, items)
    if failures:
        metrics.analysis_errors.inc(failures)
    new_rows = await _store(request, items, metrics)
    count_batch(request, REPLAYED_BATCH if request[REPLAYED_KEY] else None)
    _count(metrics, items)
    if new_rows:
        await _run_hooks(request, new_rows)
    return model_response(IngestResponse(results=[item.as_result() for item in items]))


async def _judge_left(items: Sequence[Item], judging: Judging, ephemeral: bytes | None) -> int:
    """Judge what the worker processes left (see ingest_processes.py); count the controls they accepted."""
    left = [
        item
        for item in items
        if item.status == "verified"
        and item.row is None
        and (ephemeral is None or item.public_key == ephemeral)
    ]
    control = judging.judge_control
    if control is not None and control.metrics is not None:
        vouched = sum(1 for item in items if item.status == "verified" and item.row is not None)
        if vouched:
            control.metrics.count("vouched", None, vouched)
    return await asyncio.to_thread(judge_items, left, judging) if left else 0


def _refused(request: web.Request, refused: batch_auth.BatchRefused) -> RequestRefused:
    count_batch(request, refused.reason)
    return RequestRefused(refused.status, refused.reason, refused.detail, "token_refused")


async def _authorise(request: web.Request, token: Any) -> batch_auth.BatchAuth:
    """The batch's token, or that identified batches are accepted (batch_auth.py)."""
    request[REPLAYED_KEY] = False
    try:
        auth = request[BATCH_AUTH_KEY] = await batch_auth.authorise(request, token)
    except batch_auth.BatchRefused as refused:
        raise _refused(request, refused) from None
    return auth


def _check_keys(request: web.Request, auth: batch_auth.BatchAuth, items: Sequence[Item]) -> None:
    """An item signed by another key than the token's ephemeral one is rejected ``bad_signature``; an
    identified key not listed (when keys are listed) refuses the batch."""
    keys = [item.public_key if item.status == "verified" else None for item in items]
    try:
        allowed_items = batch_auth.check_items(request, auth, keys)
    except batch_auth.BatchRefused as refused:
        raise _refused(request, refused) from None
    for item, allowed in zip(items, allowed_items, strict=True):
        if item.status == "verified" and not allowed:
            item.reject(BAD_SIGNATURE)


async def handle_measurements(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    slots = request.app[UPLOAD_SLOTS_KEY]
    started = time.perf_counter()
    taken = False
    try:
        slots.take()
        taken = True
        response = await _ingest(request, metrics)
        metrics.requests.labels(result="ok").inc()
        return response
    except RequestRefused as refused:
        metrics.requests.labels(result=refused.metric).inc()
        response = refused.response()
        if not request.content.is_eof():
            response.force_close()  # the rest of the body is not wanted: no keep-alive after it
        return response
    except Exception:  # a bug: json_errors logs it and answers 500; counted here so that it shows
        metrics.requests.labels(result=INTERNAL_ERROR).inc()
        raise
    finally:
        if taken:
            slots.give_back()
        metrics.request_seconds.observe(time.perf_counter() - started)


VERIFIERS_KEY = web.AppKey("gatewatch_verifiers", ThreadPoolExecutor)


async def _verifiers_ctx(app: web.Application) -> AsyncIterator[None]:
    # Two threads: verification runs beside the judging thread (check_batch), and two batches' at once.
    app[VERIFIERS_KEY] = ThreadPoolExecutor(
        max_workers=VERIFIER_THREADS, thread_name_prefix="gatewatch-verify"
    )
    try:
        yield
    finally:
        app[VERIFIERS_KEY].shutdown(wait=False, cancel_futures=True)


def add_ingest_routes(app: web.Application) -> None:
    app[UPLOAD_SLOTS_KEY] = UploadSlots(app[SETTINGS_KEY].max_concurrent_uploads)
    app.cleanup_ctx.append(_verifiers_ctx)
    app.cleanup_ctx.append(check_pool_ctx)
    app.router.add_post(INGEST_PATH, handle_measurements)

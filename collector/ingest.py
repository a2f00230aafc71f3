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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from gatewatch.analysis import analyse
from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.core.bogons import is_bogon
from gatewatch.core.envelope import Envelope, EnvelopeError, verify
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSAnswer, DNSQuery
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import (
    ANALYSIS_ERROR,
    ASN_MISMATCH,
    BATCH_TOO_LARGE,
    BODY_TOO_LARGE,
    CC_MISMATCH,
    CONTROL_UNVERIFIED,
    INVALID_ENVELOPE,
    INVALID_JSON,
    INVALID_MEASUREMENT,
    INVALID_REQUEST,
    RATE_LIMITED,
    STORE_UNAVAILABLE,
    TOO_FAR_IN_FUTURE,
    TOO_OLD,
    UNSTORABLE,
    UNSUPPORTED_MEDIA_TYPE,
    WITHHELD_ASN,
    WITHHELD_CC,
    blocking_label,
)
from gatewatch.core.wire import IngestItemResult, IngestResponse, ItemStatus

from .appkeys import (
    FINGERPRINTS_KEY,
    GEO_KEY,
    INGEST_HOOKS_KEY,
    METRICS_KEY,
    RATE_LIMIT_KEY,
    SETTINGS_KEY,
    STORE_KEY,
    GeoLookup,
)
from .client_address import client_address
from .geoip import GeoInfo
from .metrics import IngestMetrics, item_reason_label
from .ratelimit import retry_after_seconds
from .responses import error_response, model_response
from .settings import Settings
from .store.base import StoredMeasurement, StoreError, UnstorableError
from .vouched_control import CONTROL_JUDGE_KEY, ControlJudge

__all__ = [
    "INGEST_PATH",
    "RequestRefused",
    "add_ingest_routes",
    "domain_of",
    "rederive_dns_answers",
]

INGEST_PATH = "/api/v1/measurements"
log = logging.getLogger(__name__)
_READ_CHUNK = 64 * 1024


class RequestRefused(Exception):
    """The request as a whole cannot be processed (the client's fault unless ``status`` is 5xx)."""

    def __init__(
        self, status: int, error: str, detail: str, metric: str, headers: dict[str, str] | None = None
    ):
        super().__init__(f"{error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.metric = metric  # the gatewatch_ingest_requests_total result label
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.error, self.detail, self.headers)


@dataclass
class _Item:
    """One entry of the batch on its way through the checks."""

    index: int
    measurement_uid: str | None = None
    # "verified" while the item is on its way: by the answer it is one of the wire's statuses.
    status: ItemStatus | Literal["verified"] = "rejected"
    reason: str | None = None
    payload: bytes = b""
    signature: bytes = b""
    public_key: bytes = b""
    row: StoredMeasurement | None = None

    def reject(self, reason: str) -> None:
        self.status, self.reason = "rejected", reason

    def as_result(self) -> IngestItemResult:
        if self.status == "verified":  # every verified item is judged, then stored or rejected
            raise RuntimeError(f"item {self.index} was never judged")
        return IngestItemResult(
            index=self.index, measurement_uid=self.measurement_uid, status=self.status, reason=self.reason
        )


def domain_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. an unbalanced "[" in the host part
        return ""


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise RequestRefused(413, BODY_TOO_LARGE, f"at most {limit} bytes", "too_large")
    chunks: list[bytes] = []
    size = 0
    # Read in chunks so that a chunked upload without Content-Length is cut off at the limit, too.
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, BODY_TOO_LARGE, f"at most {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _batch(body: bytes, max_batch: int) -> list[Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # also bad UTF-8, absurd nesting, ints beyond the digit limit
        raise RequestRefused(400, INVALID_JSON, "the body is not JSON", "bad_request") from None
    if not isinstance(document, dict) or set(document) != {"measurements"}:
        raise RequestRefused(400, INVALID_REQUEST, 'expected {"measurements": [...]}', "bad_request")
    items = document["measurements"]
    if not isinstance(items, list):
        raise RequestRefused(400, INVALID_REQUEST, '"measurements" must be a list', "bad_request")
    if len(items) > max_batch:
        raise RequestRefused(400, BATCH_TOO_LARGE, f"at most {max_batch} measurements", "bad_request")
    return items


def _verify_all(raw: Sequence[Any]) -> list[_Item]:
    """Envelope shape and signature of every item (CPU-bound: runs on a worker thread)."""
    items: list[_Item] = []
    for index, value in enumerate(raw):
        item = _Item(index)
        items.append(item)
        try:
            envelope = Envelope.model_validate(value)
            item.payload, item.public_key = verify(envelope)
        except ValidationError:
            item.reject(INVALID_ENVELOPE)
            continue
        except EnvelopeError as exc:
            item.reject(exc.reason)
            continue
        # verify() accepted the base64; decoding it again cannot fail.
        item.signature = base64.b64decode(envelope.signature, validate=True)
        item.status = "verified"
    return items


def _rederive_answer(answer: DNSAnswer, routable: tuple[str, ...], geo: GeoLookup | None) -> DNSAnswer:
    address = answer.address
    if address is None:  # a CNAME: no address, so neither a bogon nor in a network
        return answer.model_copy(update={"bogon": False, "asn": None})
    info = geo.lookup(address) if geo is not None else None
    return answer.model_copy(
        update={"bogon": is_bogon(address, routable), "asn": info.asn if info is not None else None}
    )


def rederive_dns_answers(keys: WebTestKeys, routable: tuple[str, ...], geo: GeoLookup | None) -> WebTestKeys:
    """``keys`` with each DNS answer's ``bogon`` and ``asn`` recomputed by the collector (copies: the
    parsed measurement and the signed bytes are untouched). ``routable`` names the non-public ranges
    that are real in this deployment (``control_allow_net``)."""

    def query(q: DNSQuery) -> DNSQuery:
        return q.model_copy(
            update={
                "answers": [_rederive_answer(a, routable, geo) for a in q.answers],
                "replies": [
                    r.model_copy(update={"answers": [_rederive_answer(a, routable, geo) for a in r.answers]})
                    for r in q.replies
                ],
            }
        )

    return keys.model_copy(update={"queries": [query(q) for q in keys.queries]})


# Stored when the analysis itself fails: no verdict, and a flag saying why (the collector's bug to fix and
# re-judge; the agent did nothing wrong, and a rejection would be quarantined on its side for good).
_NO_VERDICT = Verdict(blocking=None, accessible=None)


def _judge_all(
    items: Sequence[_Item],
    settings: Settings,
    fingerprints: FingerprintDB,
    geo: GeoInfo | None,
    now: datetime,
    geodb: GeoLookup | None = None,
    judge_control: ControlJudge | None = None,
) -> int:
    """Parse, check times and re-derive the verdict of every verified item (worker thread). ``geo`` is the
    submitting connection's network, ``geodb`` the databases for DNS answers. Returns how many items the
    analysis failed on."""
    newest = now + timedelta(seconds=settings.max_future_seconds)
    oldest = now - timedelta(seconds=settings.max_age_seconds)
    failures = 0
    for item in items:
        if item.status != "verified":
            continue
        try:
            m = Measurement.model_validate_json(item.payload)
        except ValidationError as exc:
            not_json = any(error["type"] == "json_invalid" for error in exc.errors())
            item.reject(INVALID_JSON if not_json else INVALID_MEASUREMENT)
            continue
        item.measurement_uid = m.measurement_uid
        if m.measurement_start_time > newest:
            item.reject(TOO_FAR_IN_FUTURE)
            continue
        if m.measurement_start_time < oldest:
            item.reject(TOO_OLD)
            continue
        flags = _mismatch_flags(m, geo)
        try:
            keys = rederive_dns_answers(m.test_keys, settings.control_allow_net, geodb)
            control = keys.control
            if judge_control is not None:  # only a control the collector can authenticate (or none)
                decided = judge_control(m, now)
                control = decided.control
                flags = (*flags, CONTROL_UNVERIFIED) if decided.unverified else flags
            verdict = analyse(m.input, keys, control, fingerprints)
        except Exception as exc:  # a bug in the analysis must cost one verdict, not the item or the batch
            # The traceback is what fixing the bug needs; the log formatter masks any address it quotes.
            log.exception(
                "analysis failed",
                extra={"measurement_uid": m.measurement_uid, "error_type": type(exc).__name__},
            )
            verdict = _NO_VERDICT
            flags = (*flags, ANALYSIS_ERROR)
            failures += 1
        item.row = _stored_row(m, verdict, flags, item.payload, now)
    return failures


def _stored_row(
    m: Measurement, verdict: Verdict, flags: tuple[str, ...], payload: bytes, now: datetime
) -> StoredMeasurement:
    """What the store keeps: the signed bytes as they came, and the server's own verdict beside them."""
    fingerprint = verdict.fingerprint
    return StoredMeasurement(
        measurement_uid=m.measurement_uid,
        received_at=now,
        measurement_start_time=m.measurement_start_time,
        probe_cc=m.probe_cc,
        probe_asn=m.probe_asn,
        test_name=m.test_name,
        input=m.input,
        domain=domain_of(m.input),
        blocking=blocking_label(verdict.blocking),
        anomaly=verdict.anomaly,
        technique=fingerprint.technique if fingerprint else None,
        fingerprint_key=fingerprint.key if fingerprint else None,
        verdict_json=verdict.model_dump_json(),
        payload=payload,
        flags=flags,
    )


def _mismatch_flags(m: Measurement, geo: GeoInfo | None) -> tuple[str, ...]:
    """Claims that disagree with where the upload came from are kept, but marked (as OONI does). A
    withheld value (AS0, ZZ) is not a disagreement."""
    if geo is None:
        return ()
    flags: list[str] = []
    if geo.asn is not None and m.probe_asn != WITHHELD_ASN and m.probe_asn != f"AS{geo.asn}":
        flags.append(ASN_MISMATCH)
    if geo.cc is not None and m.probe_cc != WITHHELD_CC and m.probe_cc != geo.cc.upper():
        flags.append(CC_MISMATCH)
    return tuple(flags)


def _rate_limit(request: web.Request, items: Sequence[_Item]) -> None:
    """Charge each key that signed something in this batch. Only verified keys are charged, so nobody can
    exhaust another agent's allowance by sending its public key with garbage signatures."""
    buckets = request.app[RATE_LIMIT_KEY]
    keys = {item.public_key for item in items if item.status == "verified"}
    wait = max((buckets.take(key) for key in keys), default=0.0)
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


async def _insert(request: web.Request, pending: Sequence[_Item], metrics: IngestMetrics) -> list[bool]:
    started = time.perf_counter()
    try:
        return await request.app[STORE_KEY].insert_many(
            [item.row for item in pending if item.row is not None],
            [(item.signature, item.public_key) for item in pending],
        )
    except StoreError as exc:
        log.error("store insert failed", extra={"error": str(exc)})
        raise RequestRefused(
            503, STORE_UNAVAILABLE, "try again later", STORE_UNAVAILABLE, {"Retry-After": "5"}
        ) from None
    finally:
        metrics.store_seconds.labels(operation="insert").observe(time.perf_counter() - started)


async def _store(
    request: web.Request, items: Sequence[_Item], metrics: IngestMetrics
) -> list[StoredMeasurement]:
    pending = [item for item in items if item.row is not None]
    if not pending:
        return []
    try:
        outcomes: list[tuple[_Item, bool]] = list(
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
    new_rows = []
    for item, new in outcomes:
        item.status = "accepted" if new else "duplicate"
        if new and item.row is not None:
            new_rows.append(item.row)
    return new_rows


async def _run_hooks(request: web.Request, rows: Sequence[StoredMeasurement]) -> None:
    for hook in request.app[INGEST_HOOKS_KEY]:
        try:
            result = hook(rows)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the rows are committed: a failing consumer must not turn that into an error
            log.exception("ingest hook failed", extra={"hook": getattr(hook, "__qualname__", repr(hook))})


def _count(metrics: IngestMetrics, items: Sequence[_Item]) -> None:
    for item in items:
        reason = item_reason_label(item.reason or "") if item.status == "rejected" else ""
        metrics.items.labels(result=item.status, reason=reason).inc()
    if any(item.status == "accepted" for item in items):
        metrics.last_accepted.set_to_current_time()


async def _ingest(request: web.Request, metrics: IngestMetrics) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if request.content_type != "application/json":
        raise RequestRefused(415, UNSUPPORTED_MEDIA_TYPE, "send application/json", UNSUPPORTED_MEDIA_TYPE)
    body = await _read_body(request, settings.max_body_bytes)
    raw = await asyncio.to_thread(_batch, body, settings.max_batch)  # megabytes of JSON: off the loop
    items = await asyncio.to_thread(_verify_all, raw)
    _rate_limit(request, items)
    geo = _connection_geo(request)
    now = datetime.now(UTC)
    failures = await asyncio.to_thread(
        _judge_all,
        items,
        settings,
        request.app[FINGERPRINTS_KEY],
        geo,
        now,
        request.app[GEO_KEY],
        request.app.get(CONTROL_JUDGE_KEY),
    )
    if failures:
        metrics.analysis_errors.inc(failures)
    new_rows = await _store(request, items, metrics)
    _count(metrics, items)
    if new_rows:
        await _run_hooks(request, new_rows)
    return model_response(IngestResponse(results=[item.as_result() for item in items]))


async def handle_measurements(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    started = time.perf_counter()
    try:
        response = await _ingest(request, metrics)
        metrics.requests.labels(result="ok").inc()
        return response
    except RequestRefused as refused:
        metrics.requests.labels(result=refused.metric).inc()
        return refused.response()
    finally:
        metrics.request_seconds.observe(time.perf_counter() - started)


def add_ingest_routes(app: web.Application) -> None:
    app.router.add_post(INGEST_PATH, handle_measurements)

"""The control endpoint (test helper): the same probes, run from the collector's own uncensored vantage.

``POST /api/v1/control`` takes a :class:`ControlRequest` and answers :class:`ControlObservations`;
``POST /api/v1/controls`` takes up to 32 of them at once and answers each in order (an item's error is its
own, with the code the single endpoint would have used).

It must never become an open proxy into the operator's network. The web probe already refuses to connect
to any bogon (private, loopback, link-local, multicast, reserved) — whether it came from the URL, the DNS
answers, the addresses the agent sent, or a redirect — so the control inherits that rule; an operator
widens it only by naming ranges (``--control-allow-net``, for test labs), which become the probe's
``routable`` ranges. Timeouts and the body cap are the probe's; a small concurrency limit, a per-URL cache,
in-flight de-duplication and one global token bucket (charged only for measurements that are actually
started; never per client, so no address is kept) keep the endpoint from being used to flood anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from gatewatch.analysis import summarise
from gatewatch.core.bogons import is_bogon
from gatewatch.core.control import VOUCH_HEADER, ControlObservations, vouch_header
from gatewatch.core.vocabulary import (
    BODY_TOO_LARGE,
    CONTROL_TIMEOUT,
    INVALID_INPUT,
    INVALID_JSON,
    INVALID_REQUEST,
    RATE_LIMITED,
    UNREADABLE_BODY,
)
from gatewatch.core.wire import (
    CONTROL_ERROR_STATUS,
    ControlBatchItem,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlRequest,
)
from gatewatch.probes.config import DNSConfig, HTTPConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.web import measure

from .ratelimit import TokenBuckets, retry_after_seconds
from .responses import error_response
from .vouched_control import CONTROL_SIGNER_KEY

__all__ = [
    "CONTROL_BATCH_PATH",
    "CONTROL_PATH",
    "CONTROL_SERVICE_KEY",
    "ControlRateLimited",
    "ControlService",
    "ControlSettings",
    "add_control_routes",
]

CONTROL_PATH = "/api/v1/control"
CONTROL_BATCH_PATH = "/api/v1/controls"
MAX_BODY = 16 * 1024
MAX_BATCH_BODY = 256 * 1024  # MAX_CONTROL_BATCH requests of a realistic size, with room to spare
MAX_INPUT_LENGTH = 2048  # Measurement.input's bound: a longer URL could never be submitted anyway
_READ_CHUNK = 4096
_GLOBAL_BUCKET = b"control"
_Body = TypeVar("_Body", ControlRequest, ControlBatchRequest)


class ControlRateLimited(Exception):
    """The global control budget is spent; ``retry_after`` seconds until the next measurement may start."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry in {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class ControlSettings:
    resolver: str | None = None  # "ip[:port]"; None: the system's resolver
    ca_file: str | None = None  # None: the system's roots
    allow_nets: tuple[str, ...] = ()  # CIDRs the control may reach although they are not public
    cache_seconds: float = 60.0
    cache_entries: int = 2048
    concurrency: int = 16
    timeout: float = 15.0  # for one whole control measurement
    # Global budget of new control measurements (cache hits are free): sustained per second, and burst.
    rate: float = 5.0
    burst: int = 50

    def __post_init__(self) -> None:
        if self.cache_entries < 1 or self.concurrency < 1 or self.burst < 1:
            raise ValueError("cache_entries, concurrency and burst must be at least 1")
        if self.cache_seconds < 0 or not self.timeout > 0 or not self.rate > 0:
            raise ValueError("cache_seconds must not be negative; timeout and rate must be positive")

    def web_config(self) -> WebConfig:
        return WebConfig(
            # No listening for late replies: the control is the uncensored vantage, and injection is
            # judged from the probe's own replies; the linger would only make every control 0.25 s slower.
            dns=DNSConfig(resolver=self.resolver, timeout=3.0, linger=0.0, routable=self.allow_nets),
            tcp=TCPConfig(timeout=4.0),
            tls=TLSConfig(timeout=4.0, ca_file=self.ca_file),
            http=HTTPConfig(timeout=8.0),
        )


@dataclass
class ControlService:
    settings: ControlSettings
    asn_of: Callable[[str], int | None] | None = None
    _cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[float, ControlObservations]] = field(
        default_factory=OrderedDict
    )
    _inflight: dict[tuple[str, tuple[str, ...]], asyncio.Task[ControlObservations]] = field(
        default_factory=dict
    )
    _slots: asyncio.Semaphore | None = None
    _budget: TokenBuckets | None = None
    # The latest control measured for each URL, and when (UTC): what ingest may judge against when a
    # measurement carries no control it can authenticate (collector/vouched_control.py).
    _latest: OrderedDict[str, tuple[datetime, ControlObservations]] = field(default_factory=OrderedDict)

    def latest(self, url: str) -> tuple[datetime, ControlObservations] | None:
        """This process's latest control of ``url`` and when it was measured (safe from a worker thread)."""
        return self._latest.get(url)

    def usable_addrs(self, addrs: list[str]) -> tuple[str, ...]:
        """The agent's addresses the control may try: public ones, or inside an allowed range."""
        return tuple(sorted({a for a in addrs if not is_bogon(a, self.settings.allow_nets)}))

    async def observe(self, request: ControlRequest) -> ControlObservations:
        key = (request.input, self.usable_addrs(request.addrs))
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.settings.cache_seconds:
            self._cache.move_to_end(key)
            return cached[1]
        # Identical requests arriving together share one measurement instead of each starting one.
        task = self._inflight.get(key)
        if task is None:
            self._charge()
            task = asyncio.ensure_future(self._measure(*key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _charge(self) -> None:
        if self._budget is None:
            self._budget = TokenBuckets(self.settings.rate, self.settings.burst, max_keys=1)
        wait = self._budget.take(_GLOBAL_BUCKET)
        if wait > 0:
            raise ControlRateLimited(wait)

    def _finished(self, key: tuple[str, tuple[str, ...]], task: asyncio.Task[ControlObservations]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._cache[key] = (time.monotonic(), task.result())
        while len(self._cache) > self.settings.cache_entries:
            self._cache.popitem(last=False)
        self._latest[key[0]] = (datetime.now(UTC), task.result())
        self._latest.move_to_end(key[0])
        while len(self._latest) > self.settings.cache_entries:
            self._latest.popitem(last=False)

    async def _measure(self, url: str, addrs: tuple[str, ...]) -> ControlObservations:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        async with self._slots, asyncio.timeout(self.settings.timeout):
            keys = await measure(url, self.settings.web_config(), extra_addrs=addrs)
        return summarise(keys, self.asn_of)


CONTROL_SERVICE_KEY = web.AppKey("gatewatch_control_service", ControlService)


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:300]


def _too_large(limit: int = MAX_BODY) -> web.Response:
    return error_response(413, BODY_TOO_LARGE, f"at most {limit} bytes")


async def _read_body(request: web.Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (chunked uploads are cut off there, too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _input_problem(url: str) -> str | None:
    """Why ``url`` cannot be controlled, or None. The web probe checks the host in detail (and raises
    ValueError, answered 400 too); this catches what it would not even parse."""
    if len(url) > MAX_INPUT_LENGTH:
        return f"input: at most {MAX_INPUT_LENGTH} characters"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"input: {exc}"[:300]
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "input must be an http or https URL with a host"
    return None


async def _answer(service: ControlService, control_request: ControlRequest) -> ControlBatchItem:
    """One control: its observations, or the error (and detail) that says why there are none."""
    url = control_request.input
    problem = _input_problem(url)
    if problem is not None:
        return ControlBatchItem(input=url, error=INVALID_INPUT, detail=problem)
    try:
        observations = await service.observe(control_request)
    except ControlRateLimited as exc:
        seconds = retry_after_seconds(exc.retry_after)
        return ControlBatchItem(
            input=url, error=RATE_LIMITED, detail=f"retry in {seconds} s", retry_after=seconds
        )
    except ValueError as exc:  # the probe refused the URL (an invalid host name)
        return ControlBatchItem(input=url, error=INVALID_INPUT, detail=str(exc)[:300])
    except TimeoutError:
        return ControlBatchItem(input=url, error=CONTROL_TIMEOUT, detail="the control took too long")
    return ControlBatchItem(input=url, control=observations)


async def _read_model(request: web.Request, model: type[_Body], limit: int) -> _Body | web.Response:
    """The body parsed as ``model``, or the 400/413 answer that says why it is not one."""
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    try:
        body = await _read_body(request, limit)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return error_response(400, UNREADABLE_BODY, str(exc)[:200])
    if body is None:
        return _too_large(limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        not_json = any(error["type"] == "json_invalid" for error in exc.errors())
        return error_response(400, INVALID_JSON if not_json else INVALID_REQUEST, _describe(exc))


async def handle_control(request: web.Request) -> web.Response:
    control_request = await _read_model(request, ControlRequest, MAX_BODY)
    if isinstance(control_request, web.Response):
        return control_request
    item = await _answer(request.app[CONTROL_SERVICE_KEY], control_request)
    if item.control is not None:
        # The body is the control's JSON text exactly as signed; the signature travels in a header.
        vouch = request.app[CONTROL_SIGNER_KEY].sign(item.input, item.control)
        headers = {VOUCH_HEADER: vouch_header(vouch)}
        return web.json_response(text=vouch.control, headers=headers)
    assert item.error in CONTROL_ERROR_STATUS, item.error  # _answer gives observations or one of these
    headers = {"Retry-After": str(item.retry_after)} if item.retry_after is not None else None
    return error_response(CONTROL_ERROR_STATUS[item.error], item.error, item.detail or "", headers)


async def handle_controls(request: web.Request) -> web.Response:
    """Several controls in one request, measured concurrently (within the service's own limits), each
    answered in order; one URL's error is its item's, never the whole request's."""
    batch = await _read_model(request, ControlBatchRequest, MAX_BATCH_BODY)
    if isinstance(batch, web.Response):
        return batch
    service = request.app[CONTROL_SERVICE_KEY]
    signer = request.app[CONTROL_SIGNER_KEY]
    items = [
        item
        if item.control is None
        else item.model_copy(update={"vouch": signer.sign(item.input, item.control)})
        for item in await asyncio.gather(*(_answer(service, one) for one in batch.requests))
    ]
    return web.json_response(text=ControlBatchResponse(results=list(items)).model_dump_json())


def add_control_routes(app: web.Application, service: ControlService) -> None:
    app[CONTROL_SERVICE_KEY] = service
    app.router.add_post(CONTROL_PATH, handle_control)
    app.router.add_post(CONTROL_BATCH_PATH, handle_controls)

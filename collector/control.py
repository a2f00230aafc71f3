"""The control endpoint (test helper): the same probes, run from the collector's own uncensored vantage.

``POST /api/v1/control`` takes a :class:`ControlRequest` and answers :class:`ControlObservations`.

It must never become an open proxy into the operator's network. The web probe already refuses to connect
to any bogon (private, loopback, link-local, multicast, reserved) — whether it came from the URL, the DNS
answers, the addresses the agent sent, or a redirect — so the control inherits that rule; an operator
widens it only by naming ranges (``--control-allow-net``, for test labs), which become the probe's
``routable`` ranges. Timeouts and the body cap are the probe's; a small concurrency limit, a per-URL cache
and in-flight de-duplication keep the endpoint from being used to flood anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from gatewatch.probes.analysis import summarise
from gatewatch.probes.bogons import is_bogon
from gatewatch.probes.config import DNSConfig, HTTPConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.control import ControlObservations, ControlRequest
from gatewatch.probes.web import measure

__all__ = ["CONTROL_SERVICE_KEY", "ControlService", "ControlSettings", "add_control_routes"]

MAX_BODY = 16 * 1024


@dataclass(frozen=True)
class ControlSettings:
    resolver: str | None = None  # "ip[:port]"; None: the system's resolver
    ca_file: str | None = None  # None: the system's roots
    allow_nets: tuple[str, ...] = ()  # CIDRs the control may reach although they are not public
    cache_seconds: float = 60.0
    cache_entries: int = 2048
    concurrency: int = 16
    timeout: float = 15.0  # for one whole control measurement

    def web_config(self) -> WebConfig:
        return WebConfig(
            dns=DNSConfig(resolver=self.resolver, timeout=3.0, routable=self.allow_nets),
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
            task = asyncio.ensure_future(self._measure(*key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: tuple[str, tuple[str, ...]], task: asyncio.Task[ControlObservations]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._cache[key] = (time.monotonic(), task.result())
        while len(self._cache) > self.settings.cache_entries:
            self._cache.popitem(last=False)

    async def _measure(self, url: str, addrs: tuple[str, ...]) -> ControlObservations:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        async with self._slots, asyncio.timeout(self.settings.timeout):
            keys = await measure(url, self.settings.web_config(), extra_addrs=addrs)
        return summarise(keys, self.asn_of)


CONTROL_SERVICE_KEY = web.AppKey("control_service", ControlService)


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:300]


def _bad_request(error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=400)


async def handle_control(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.json_response({"error": "too_large", "detail": f"at most {MAX_BODY} bytes"}, status=413)
    try:
        body = await request.content.read(MAX_BODY + 1)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return _bad_request("unreadable_body", str(exc)[:200])
    if len(body) > MAX_BODY:
        return web.json_response({"error": "too_large", "detail": f"at most {MAX_BODY} bytes"}, status=413)
    try:
        control_request = ControlRequest.model_validate_json(body)
    except ValidationError as exc:
        return _bad_request("invalid_request", _describe(exc))
    parts = urlsplit(control_request.input)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _bad_request("invalid_input", "input must be an http or https URL with a host")
    service = request.app[CONTROL_SERVICE_KEY]
    try:
        observations = await service.observe(control_request)
    except TimeoutError:
        return web.json_response(
            {"error": "control_timeout", "detail": "the control took too long"}, status=504
        )
    return web.json_response(text=observations.model_dump_json())


def add_control_routes(app: web.Application, service: ControlService) -> None:
    app[CONTROL_SERVICE_KEY] = service
    app.router.add_post("/api/v1/control", handle_control)

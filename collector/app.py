"""The application factory: state under typed keys, resources in cleanup contexts, routes in small groups.

Other parts of the collector plug in the same way: an ``add_*_routes(app)`` function for their endpoints
and, when they hold a resource, a cleanup-context generator. Nothing lives at module level, so a test can
build as many independent applications as it likes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from gatewatch.analysis import load_default_fingerprints
from gatewatch.core.vocabulary import (
    INTERNAL_ERROR,
    STORE_UNAVAILABLE,
    UNSUPPORTED_CONTENT_ENCODING,
    UNSUPPORTED_MEDIA_TYPE,
)
from gatewatch.core.wire import Status

from .appkeys import (
    FINGERPRINTS_KEY,
    GEO_KEY,
    INFLIGHT_KEY,
    INGEST_HOOKS_KEY,
    METRICS_KEY,
    RATE_LIMIT_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    STORE_KEY,
    InFlight,
)
from .confirm import add_confirm_routes
from .control import ControlService, ControlSettings, add_control_routes
from .geoip import GeoDB
from .geolocate import add_geolocate_routes
from .ingest import INGEST_PATH, add_ingest_routes
from .interference_api import add_interference
from .issuer import ISSUER_KEY, Clock, Issuer, add_issuer_routes
from .metrics import (
    REQUEST_RESULTS,
    SIGHTING_METRICS_KEY,
    TOKEN_METRICS_KEY,
    ControlMetrics,
    IngestMetrics,
    SightingMetrics,
    TokenMetrics,
    metrics_response,
)
from .openapi import add_openapi_routes
from .ratelimit import TokenBuckets
from .request_body import RequestRefused
from .research import add_research_routes
from .responses import error_response, model_response
from .settings import Settings
from .store import StoreError, open_store
from .testlists import add_test_list_routes
from .tokens import add_token_routes
from .vouched_control import CONTROL_JUDGE_KEY, ControlJudge, ControlSigner, add_control_keys_route

__all__ = ["add_health_routes", "add_metrics_routes", "control_settings", "create_app", "server_options"]

log = logging.getLogger(__name__)
_READY_TIMEOUT = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def track_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[INFLIGHT_KEY]
    in_flight.enter()
    try:
        response = await handler(request)
        if in_flight.draining:
            response.force_close()  # tell keep-alive clients to go elsewhere
        return response
    finally:
        in_flight.leave()


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error", "detail"}``; an unexpected exception is logged (without the client) and
    answered 500, a store outage 503 so that agents retry."""
    try:
        if request.path != INGEST_PATH and request.headers.get("Content-Encoding", "identity") != "identity":
            # Only the upload decodes a compressed body (request_body.py); aiohttp's own decoding is off.
            raise RequestRefused(
                415, UNSUPPORTED_CONTENT_ENCODING, "only uploads may be compressed", UNSUPPORTED_MEDIA_TYPE
            )
        return await handler(request)
    except RequestRefused as refused:
        return refused.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own errors (an unknown path, a wrong method): the reason phrase, as the vocabulary says.
        error = exc.reason.lower().replace(" ", "_")
        if request.path == INGEST_PATH:  # e.g. a PUT: still an answer of the ingest endpoint, counted
            label = error if error in REQUEST_RESULTS else "bad_request"
            request.app[METRICS_KEY].requests.labels(result=label).inc()
        return error_response(exc.status, error, exc.text or exc.reason)
    except StoreError as exc:
        log.error("store unavailable", extra={"path": request.path, "error": str(exc)})
        return error_response(503, STORE_UNAVAILABLE, "try again later", {"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(500, INTERNAL_ERROR, "see the collector's log")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = await open_store(app[SETTINGS_KEY].db)
    app[STORE_KEY] = store
    try:
        yield
    finally:
        await store.close()


def _issuer_ctx(clock: Clock | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        issuer = Issuer(
            app[STORE_KEY],
            overlap=timedelta(seconds=settings.token_overlap_seconds),
            bits=settings.issuer_key_bits,
            **({"clock": clock} if clock is not None else {}),
        )
        # The keys are made (or read) on first use: a collector that never sees a token request or a token
        # pays nothing at startup.
        app[ISSUER_KEY] = issuer
        yield

    return ctx


async def _geo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    if app[GEO_KEY] is not None or not (settings.asn_db or settings.country_db):
        yield  # given by the caller, or no databases configured: no mismatch flags
        return
    db = await asyncio.to_thread(GeoDB.load, settings.asn_db, settings.country_db)
    for line in db.describe():
        log.info("geolocation database", extra={"source": line})
    app[GEO_KEY] = db
    try:
        yield
    finally:
        db.close()


async def _fingerprints_ctx(app: web.Application) -> AsyncIterator[None]:
    app[FINGERPRINTS_KEY] = await asyncio.to_thread(load_default_fingerprints)
    yield


async def _healthz(request: web.Request) -> web.Response:
    return model_response(Status(status="ok"), exclude_none=True)


async def _readyz(request: web.Request) -> web.Response:
    store_seconds = request.app[METRICS_KEY].store_seconds.labels(operation="ping")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            await request.app[STORE_KEY].ping()
    except (StoreError, TimeoutError):
        return model_response(Status(status="unavailable", detail="store unreachable"), status=503)
    finally:
        store_seconds.observe(time.perf_counter() - started)
    return model_response(Status(status="ready"), exclude_none=True)


async def _metrics(request: web.Request) -> web.Response:
    min_interval = request.app[SETTINGS_KEY].metrics_min_interval_seconds
    return await metrics_response(request.app[REGISTRY_KEY], request, min_interval=min_interval)


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)


def add_metrics_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", _metrics)


# After refusing a body, aiohttp reads and drops what the client still sends (so that the client sees the
# answer rather than a reset) for at most this long, then closes.
_LINGER_SECONDS = 2.0


def server_options(settings: Settings) -> dict[str, object]:
    """What aiohttp's connection handler is given: no decompression of its own (request_body.py inflates
    uploads in bounded steps), and a deadline for a request's head. aiohttp's keep-alive timer runs from
    the connection's start and closes a connection whose handler still waits for a complete head, so it is
    the head timeout as well as the idle keep-alive timeout."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": settings.header_timeout_seconds,
        "lingering_time": _LINGER_SECONDS,
    }


def control_settings(settings: Settings) -> ControlSettings:
    return ControlSettings(
        resolver=settings.control_resolver or None,
        ca_file=settings.ca_file or None,
        allow_nets=settings.control_allow_net,
        cache_seconds=settings.control_cache_seconds,
        concurrency=settings.control_concurrency,
        rate=settings.control_rate,
        burst=settings.control_burst,
    )


def _control_service(app: web.Application) -> ControlService:
    def asn_of(ip: str) -> int | None:
        # Read at call time: the databases open on startup, after the service exists. Only the addresses
        # of the servers the control reached are looked up here, never a client's.
        geo = app[GEO_KEY]
        info = geo.lookup(ip) if geo is not None else None
        return info.asn if info is not None else None

    return ControlService(control_settings(app[SETTINGS_KEY]), asn_of)


def create_app(
    settings: Settings, *, registry: CollectorRegistry | None = None, clock: Clock | None = None
) -> web.Application:
    """A collector application; its store, geolocation databases, fingerprints and test lists open on
    startup, and the interference aggregate is rebuilt from the store."""
    # The ingest handler reads its own body with its own limit; this one covers every other endpoint.
    app = web.Application(
        middlewares=[track_in_flight, json_errors],
        client_max_size=settings.max_body_bytes,
        handler_args=server_options(settings),
    )
    registry = registry if registry is not None else CollectorRegistry()
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = IngestMetrics.register(registry)
    app[GEO_KEY] = None
    app[INFLIGHT_KEY] = InFlight()
    app[INGEST_HOOKS_KEY] = []
    app[RATE_LIMIT_KEY] = TokenBuckets(settings.key_rate, settings.key_burst, settings.rate_limit_keys)
    app[TOKEN_METRICS_KEY] = TokenMetrics.register(registry)
    app[SIGHTING_METRICS_KEY] = SightingMetrics.register(registry)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_issuer_ctx(clock))  # ``clock``: tests move time to see keys rotate
    app.cleanup_ctx.append(_geo_ctx)
    app.cleanup_ctx.append(_fingerprints_ctx)
    add_health_routes(app)
    add_metrics_routes(app)
    add_ingest_routes(app)
    add_issuer_routes(app)
    add_token_routes(app)
    add_geolocate_routes(app)
    service = _control_service(app)
    signer = ControlSigner.from_setting(
        settings.control_signing_secret,
        settings.control_key_period_seconds,
        settings.max_age_seconds + settings.control_max_age_seconds,
    )
    add_control_keys_route(app, signer)
    control_metrics = ControlMetrics.register(registry)  # always exposed: zero when nothing is judged
    if settings.require_vouched_control:
        app[CONTROL_JUDGE_KEY] = ControlJudge(
            signer,
            timedelta(seconds=settings.control_max_age_seconds),
            service.latest,
            control_metrics,
        )
    add_control_routes(app, service)
    add_test_list_routes(app)
    add_confirm_routes(app)
    add_interference(app)  # after the store's context: its rebuild reads the store
    add_research_routes(app)
    add_openapi_routes(app)
    return app

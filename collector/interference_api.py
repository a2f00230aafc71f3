"""Interference attribution in the app: one aggregate per application, fed on ingest, rebuilt on start.

- on start (a cleanup context, after the store has opened) the aggregate is rebuilt from the store's
  measurements in the attribution window, so a restarted collector shows the same rows as before;
- each newly stored batch is added through an ingest hook;
- on PostgreSQL, what the other collectors store is added every few seconds (peer_sync.py);
- ``/metrics`` renders it through the custom collector of metrics_interference.py;
- ``GET /api/v1/interference?cc=XX`` serves the attribution rows.

Query parameters of the endpoint: ``cc`` (optional, a two-letter country code: all countries when
absent) and ``scope`` (optional, comma-separated or repeated, among ``gateway``, ``isp``, ``none``,
``insufficient-data``; default ``gateway,isp``, the rows the collector keeps current. The other scopes
are computed on request, so they cost more), and ``per`` (optional: ``domain``, the default, one row per
domain rolled up from its URLs, interfered with when any of them is; or ``url``, one row per input URL,
the unit attribution decides). The answer is the wire's :class:`InterferenceResponse`, converted from
the analysis's rows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from gatewatch.analysis.attribution import AttributionSettings
from gatewatch.core.vocabulary import INTERFERENCE_UNITS, SCOPES
from gatewatch.core.wire import InterferenceResponse, InterferenceRow

from .aggregate import InterferenceAggregate
from .appkeys import INGEST_HOOKS_KEY, REGISTRY_KEY, SETTINGS_KEY, STORE_KEY
from .metrics_interference import register_interference_metrics
from .peer_sync import PeerSync, SharedStore
from .peer_sync import running as running_peer_sync
from .responses import model_response
from .settings import Settings
from .store.base import MeasurementFilter

__all__ = [
    "AGGREGATE_KEY",
    "DEFAULT_SCOPES",
    "INTERFERENCE_PATH",
    "add_interference",
    "attribution_settings",
]

INTERFERENCE_PATH = "/api/v1/interference"
DEFAULT_SCOPES = ("gateway", "isp")
_CC = re.compile(r"^[A-Za-z]{2}$")
log = logging.getLogger(__name__)

AGGREGATE_KEY = web.AppKey("gatewatch_interference_aggregate", InterferenceAggregate)


def attribution_settings(settings: Settings) -> AttributionSettings:
    return AttributionSettings(
        window=timedelta(seconds=settings.attribution_window_seconds),
        min_networks_gateway=settings.attribution_min_networks,
        gateway_share=settings.attribution_gateway_share,
    )


async def _rebuild_ctx(app: web.Application) -> AsyncIterator[None]:
    aggregate, store = app[AGGREGATE_KEY], app[STORE_KEY]
    # A store shared with other collectors (PostgreSQL): follow what they store (peer_sync.py).
    sync = PeerSync(aggregate, store) if isinstance(store, SharedStore) else None
    since = datetime.now(UTC) - aggregate.settings.window
    started = time.perf_counter()
    rows = store.iterate(MeasurementFilter(since=since))
    count = await aggregate.rebuild(sync.remembering(rows) if sync else rows)
    log.info(
        "interference aggregate rebuilt",
        extra={"measurements": count, "seconds": round(time.perf_counter() - started, 3)},
    )
    if sync is None:
        yield
        return
    app[INGEST_HOOKS_KEY].append(sync.remember)
    async with running_peer_sync(sync):
        yield


def _scopes(request: web.Request) -> tuple[str, ...]:
    values = [part.strip() for value in request.query.getall("scope", []) for part in value.split(",")]
    values = [value for value in values if value]
    if not values:
        return DEFAULT_SCOPES
    if "all" in values:
        return SCOPES
    unknown = sorted(set(values) - set(SCOPES))
    if unknown:
        raise web.HTTPBadRequest(
            text=f"scope: unknown {', '.join(unknown)[:100]} (one of {', '.join(SCOPES)})"
        )
    return tuple(dict.fromkeys(values))


async def handle_interference(request: web.Request) -> web.Response:
    cc = request.query.get("cc")
    if cc is not None and not _CC.match(cc):
        raise web.HTTPBadRequest(text="cc must be a two-letter country code")
    scopes = _scopes(request)
    per = request.query.get("per", INTERFERENCE_UNITS[0])
    if per not in INTERFERENCE_UNITS:
        raise web.HTTPBadRequest(text=f"per must be one of {', '.join(INTERFERENCE_UNITS)}")
    aggregate = request.app[AGGREGATE_KEY]
    # Off the event loop: scopes other than gateway/isp are computed afresh for every (country, URL).
    rows = await asyncio.to_thread(
        aggregate.interference, cc.upper() if cc else None, scopes=scopes, urls=per == "url"
    )
    # The analysis's dataclasses, read attribute by attribute into the wire's models.
    answer = InterferenceResponse(
        results=[InterferenceRow.model_validate(row, from_attributes=True) for row in rows]
    )
    return model_response(answer)


def add_interference(app: web.Application) -> InterferenceAggregate:
    """Create the app's aggregate and wire it: metrics, ingest hook, rebuild on start, the endpoint.

    Call after the store's cleanup context has been added (the rebuild reads the store)."""
    aggregate = InterferenceAggregate(attribution_settings(app[SETTINGS_KEY]))
    app[AGGREGATE_KEY] = aggregate
    register_interference_metrics(app[REGISTRY_KEY], aggregate)
    app[INGEST_HOOKS_KEY].append(aggregate.add_rows)
    app.cleanup_ctx.append(_rebuild_ctx)
    app.router.add_get(INTERFERENCE_PATH, handle_interference)
    return aggregate

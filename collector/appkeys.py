"""The typed keys under which the application keeps its shared state (see app.py for who fills them).

Kept apart from app.py so that route modules can read the state without importing the factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from gatewatch.analysis.fingerprints import FingerprintDB

from .geoip import GeoInfo
from .metrics import IngestMetrics
from .ratelimit import TokenBuckets
from .settings import Settings
from .store.base import Store, StoredMeasurement

__all__ = [
    "FINGERPRINTS_KEY",
    "GEO_KEY",
    "INFLIGHT_KEY",
    "INGEST_HOOKS_KEY",
    "METRICS_KEY",
    "RATE_LIMIT_KEY",
    "REGISTRY_KEY",
    "SETTINGS_KEY",
    "STORE_KEY",
    "GeoLookup",
    "InFlight",
    "IngestHook",
]


class GeoLookup(Protocol):
    def lookup(self, ip: str) -> GeoInfo | None: ...


class InFlight:
    """Requests being handled, so that a stopping collector can wait for them.

    aiohttp's own shutdown stops reading from every connection at once, which would cut off an upload
    whose body is still arriving; the collector instead stops listening, waits here, then shuts down."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no request is in flight (bound it with ``asyncio.timeout``)."""
        self.draining = True
        await self._idle.wait()


# Called with the rows that were newly stored (already committed); may be a coroutine function.
IngestHook = Callable[[Sequence[StoredMeasurement]], Awaitable[None] | None]

SETTINGS_KEY: Final = web.AppKey("gatewatch_settings", Settings)
STORE_KEY: Final = web.AppKey("gatewatch_store", Store)
REGISTRY_KEY: Final = web.AppKey("gatewatch_registry", CollectorRegistry)
METRICS_KEY: Final = web.AppKey("gatewatch_ingest_metrics", IngestMetrics)
GEO_KEY: Final = web.AppKey[GeoLookup | None]("gatewatch_geo")
FINGERPRINTS_KEY: Final = web.AppKey("gatewatch_fingerprints", FingerprintDB)
INGEST_HOOKS_KEY: Final = web.AppKey[list[IngestHook]]("gatewatch_ingest_hooks")
INFLIGHT_KEY: Final = web.AppKey("gatewatch_in_flight", InFlight)
RATE_LIMIT_KEY: Final = web.AppKey("gatewatch_key_rate_limit", TokenBuckets)

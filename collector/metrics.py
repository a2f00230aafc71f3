"""Ingest-health metrics, all defined here against a registry passed in (tests use a fresh one).

They are prometheus_client's types, tracked (collector/tracked_metrics.py): the /metrics page renders them
again only after one of them changed.

The names are an interface: dashboards and alerts key on them. Every label comes from a small fixed set
(never an address, a key or a URL); values are pre-created at zero so that ``rate()`` and absence alerts
work before the first event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from aiohttp import web
from prometheus_client import CollectorRegistry

from gatewatch.core.vocabulary import (
    BODY_TIMEOUT,
    INTERNAL_ERROR,
    ITEM_REJECTIONS,
    MALFORMED_HTTP,
    METHOD_NOT_ALLOWED,
    RATE_LIMITED,
    REPLAYED_BATCH,
    STORE_UNAVAILABLE,
    TOKEN_ERRORS,
    TOKEN_REFUSALS,
    TOO_MANY_UPLOADS,
    UNREADABLE_BODY,
    UNSUPPORTED_MEDIA_TYPE,
    VOUCH_REFUSALS,
    VOUCH_SOURCES,
    VouchRefusal,
    VouchSource,
)
from gatewatch.core.wire import ItemStatus

from .exposition import serve_metrics
from .tracked_metrics import TrackedCounter, TrackedGauge, TrackedHistogram

__all__ = [
    "ITEM_REASONS",
    "ITEM_RESULTS",
    "REQUEST_RESULTS",
    "STORE_OPERATIONS",
    "SIGHTING_METRICS_KEY",
    "SIGHTING_RESULTS",
    "TOKEN_METRICS_KEY",
    "BATCH_RESULTS",
    "ControlMetrics",
    "IngestMetrics",
    "SightingMetrics",
    "TokenMetrics",
    "item_reason_label",
    "metrics_response",
]

# Every answer the ingest endpoint can give falls under one of these (a test sends each kind): the client's
# faults (bad_request covers every 400 about the content: JSON, batch shape, Content-Encoding), the
# server's limits, and internal_error for a bug (a 500 must show here, not only in the latency histogram).
# malformed_http counts requests aiohttp's parser refused before any path was known (on any endpoint: the
# upload is by far the largest request a collector receives).
REQUEST_RESULTS = (
    "ok",
    "bad_request",
    "too_large",
    UNSUPPORTED_MEDIA_TYPE,
    UNREADABLE_BODY,
    BODY_TIMEOUT,
    TOO_MANY_UPLOADS,
    RATE_LIMITED,
    STORE_UNAVAILABLE,
    MALFORMED_HTTP,
    METHOD_NOT_ALLOWED,
    INTERNAL_ERROR,
    "token_refused",  # the batch's token (or identified key) refused: gatewatch_ingest_batches_total says why
)
ITEM_RESULTS: tuple[str, ...] = get_args(ItemStatus)
# Why an item was rejected: the vocabulary's reasons (the envelope's own checks first), and ``other`` for a
# reason nobody foresaw.
ITEM_REASONS = (*ITEM_REJECTIONS, "other")
STORE_OPERATIONS = ("insert", "page", "ping")
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def item_reason_label(reason: str) -> str:
    """A rejection reason as a label value: an unforeseen reason is counted as ``other`` so that the label
    set stays bounded (the response to the client still carries the precise reason)."""
    return reason if reason in ITEM_REASONS else "other"


@dataclass(frozen=True)
class IngestMetrics:
    requests: TrackedCounter
    items: TrackedCounter
    request_seconds: TrackedHistogram
    store_seconds: TrackedHistogram
    last_accepted: TrackedGauge
    analysis_errors: TrackedCounter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> IngestMetrics:
        metrics = cls(
            requests=TrackedCounter(
                "gatewatch_ingest_requests",
                "Measurement upload requests, by outcome of the whole request.",
                ["result"],
                registry=registry,
            ),
            items=TrackedCounter(
                "gatewatch_ingest_items",
                "Measurements in upload requests, by outcome and rejection reason.",
                ["result", "reason"],
                registry=registry,
            ),
            request_seconds=TrackedHistogram(
                "gatewatch_ingest_request_seconds",
                "Time to answer a measurement upload request.",
                buckets=_FAST_BUCKETS,
                registry=registry,
            ),
            store_seconds=TrackedHistogram(
                "gatewatch_store_seconds",
                "Time spent in store operations (an insert includes its durable commit).",
                ["operation"],
                buckets=_FAST_BUCKETS,
                registry=registry,
            ),
            last_accepted=TrackedGauge(
                "gatewatch_ingest_last_accepted_timestamp_seconds",
                "Unix time at which a measurement was last accepted (alert when it stops moving).",
                registry=registry,
                multiprocess_mode="max",  # serve --workers: the latest of any worker (workers_metrics.py)
            ),
            analysis_errors=TrackedCounter(
                "gatewatch_ingest_analysis_errors",
                "Measurements stored without a verdict because the analysis failed (a collector bug: the "
                "items are flagged analysis_error and accepted).",
                registry=registry,
            ),
        )
        for result in REQUEST_RESULTS:
            metrics.requests.labels(result=result)
        metrics.items.labels(result="accepted", reason="")
        metrics.items.labels(result="duplicate", reason="")
        for reason in ITEM_REASONS:
            metrics.items.labels(result="rejected", reason=reason)
        for operation in STORE_OPERATIONS:
            metrics.store_seconds.labels(operation=operation)
        return metrics


# How an upload batch's signing was judged (issue 12): a token spent for the first time, an identified
# batch, an identical resend, or one of the refusals.
BATCH_RESULTS: tuple[str, ...] = ("token", "identified", REPLAYED_BATCH, *sorted(TOKEN_REFUSALS))
TOKEN_REQUEST_RESULTS: tuple[str, ...] = ("ok", *TOKEN_ERRORS)


@dataclass(frozen=True)
class TokenMetrics:
    batches: TrackedCounter
    requests: TrackedCounter
    issued: TrackedCounter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> TokenMetrics:
        metrics = cls(
            batches=TrackedCounter(
                "gatewatch_ingest_batches",
                "Upload batches by how their signing was judged: token, identified, replayed_batch, or the "
                "reason the batch was refused (forged_token, wrong_epoch, unknown_key, double_spend, ...).",
                ["result"],
                registry=registry,
            ),
            requests=TrackedCounter(
                "gatewatch_token_requests",
                "Token issuance requests, by outcome (ok, or the refusal's reason).",
                ["result"],
                registry=registry,
            ),
            issued=TrackedCounter(
                "gatewatch_tokens_issued", "Blind signatures issued (tokens).", registry=registry
            ),
        )
        for result in BATCH_RESULTS:
            metrics.batches.labels(result=result)
        for result in TOKEN_REQUEST_RESULTS:
            metrics.requests.labels(result=result)
        return metrics


TOKEN_METRICS_KEY: web.AppKey[TokenMetrics] = web.AppKey("gatewatch_token_metrics", TokenMetrics)


@dataclass(frozen=True)
class ControlMetrics:
    """Which control each measurement was judged against at ingest (collector/vouched_control.py): its own
    vouched control (``refusal=""``), else the collector's own recent control of the URL, else none (stored
    without a verdict); with why the embedded vouch was refused. ``absent`` is an agent that sent none (an
    old agent, or a control it could not fetch); ``forged``/``other_url`` is a lying or tampered agent."""

    controls: TrackedCounter
    # Each (source, refusal) child, found once: counted per measurement, where labels() cost a tenth of
    # the judging. The counter's series are never removed, so a child stays the one the page shows.
    _children: dict[tuple[str, str], TrackedCounter] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ControlMetrics:
        metrics = cls(
            controls=TrackedCounter(
                "gatewatch_ingest_controls",
                "Measurements judged at ingest, by where their control came from (vouched, own_cache, none) "
                "and why the control they embedded was refused (empty when it was used).",
                ["source", "refusal"],
                registry=registry,
            )
        )
        metrics.controls.labels(source="vouched", refusal="")
        for source in VOUCH_SOURCES:
            if source != "vouched":
                for refusal in VOUCH_REFUSALS:
                    metrics.controls.labels(source=source, refusal=refusal)
        return metrics

    def count(self, source: VouchSource, refusal: VouchRefusal | None, times: int = 1) -> None:
        key = (source, refusal or "")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.controls.labels(source=source, refusal=key[1])
        child.inc(times)


# How a sighting (POST /api/v1/confirm) was answered: accepted (some URL listed), rejected (none could
# be: 422 nothing_listable), invalid (422: not a Sighting, or the withheld country), bad_request (400: not
# JSON, unreadable), too_large (413), rate_limited (429).
SIGHTING_RESULTS: tuple[str, ...] = (
    "accepted",
    "rejected",
    "invalid",
    "bad_request",
    "too_large",
    RATE_LIMITED,
)


@dataclass(frozen=True)
class SightingMetrics:
    sightings: TrackedCounter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> SightingMetrics:
        metrics = cls(
            sightings=TrackedCounter(
                "gatewatch_sightings",
                "Sightings (POST /api/v1/confirm: test-list URLs an agent just found anomalous, before its "
                "upload), by how they were answered. Nothing about the sender is counted.",
                ["result"],
                registry=registry,
            )
        )
        for result in SIGHTING_RESULTS:
            metrics.sightings.labels(result=result)
        return metrics


SIGHTING_METRICS_KEY: web.AppKey[SightingMetrics] = web.AppKey("gatewatch_sighting_metrics", SightingMetrics)


async def metrics_response(
    registry: CollectorRegistry, request: web.Request | None = None, *, min_interval: float = 0.0
) -> web.Response:
    """The registry as ``request`` asks for it (collector/exposition.py: a cached text page, gzip if
    accepted, OpenMetrics through prometheus_client), answers at least ``min_interval`` seconds apart
    (collector/scrape_pacer.py). Rendering runs off the loop."""
    return await serve_metrics(registry, request, min_interval=min_interval)

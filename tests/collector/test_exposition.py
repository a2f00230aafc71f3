"""The cached /metrics page: byte for byte what prometheus_client renders, after any updates; stale only
within the interference snapshot's refresh interval; gzip; content negotiation; the multiprocess fallback."""

from __future__ import annotations

import asyncio
import gzip
import math
import time
import zlib
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as text_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.exposition import (
    MetricsPage,
    SeriesFamily,
    accepts_cached_text,
    accepts_gzip,
    metrics_page,
    render_families,
    render_series,
)
from gatewatch.collector.metrics import IngestMetrics, TokenMetrics, metrics_response
from gatewatch.collector.metrics_interference import InterferenceCollector, register_interference_metrics
from gatewatch.collector.tracked_metrics import TrackedCounter, TrackedGauge, TrackedHistogram

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# What Prometheus 2.x and 3.x send by default (scrape_protocols): OpenMetrics first, the text format after.
PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def row(uid: int, cc: str, asn: str, domain: str, blocked: bool, minutes_ago: float = 5) -> SimpleNamespace:
    return SimpleNamespace(
        measurement_uid=f"{uid:08d}",
        measurement_start_time=NOW - timedelta(minutes=minutes_ago),
        received_at=NOW,
        probe_cc=cc,
        probe_asn=asn,
        test_name="web",
        input=f"https://{domain}/",
        domain=domain,
        blocking="dns" if blocked else "false",
        anomaly=blocked,
        technique="dns.injection" if blocked else None,
        fingerprint_key=f"fp-{cc}" if blocked else None,
        flags=(),
    )


class VersionedCollector:
    """A custom collector with a cache key: its families change only with the version (as the interference
    collector's change only with its snapshot's generation)."""

    def __init__(self) -> None:
        self.version = 0
        self.values: dict[tuple[str, str], float] = {}

    def cache_key(self) -> Hashable:
        return self.version

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily(
            "versioned_events", 'Events\\ with a "help"\nover two lines', labels=["k"]
        )
        gauge = GaugeMetricFamily("versioned_level", "Levels", labels=["k", "j"])
        for (k, j), value in sorted(self.values.items()):
            counter.add_metric([k], abs(value) if not math.isnan(value) else 0.0, created=1_700_000_000.5)
            gauge.add_metric([k, j], value)
        return [counter, gauge]


label_values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0.0, -0.0, 1e6, 1234567.0, 1e-7, 0.1]),
)
operations = st.lists(
    st.tuples(
        st.sampled_from(["inc", "set", "observe", "custom", "remove", "clear"]),
        label_values,
        label_values,
        values,
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, min_size=1, max_size=4))
def test_the_page_is_generate_latest_byte_for_byte_after_any_updates(batches) -> None:
    # plain metrics (rendered at every scrape), tracked ones (each rendered again after its own change) and
    # a keyed collector: the page kept piece by piece equals a full render after every batch of changes
    registry = CollectorRegistry()
    counters = [
        Counter("demo_events", "Events by kind", ["kind"], registry=registry),
        TrackedCounter("tracked_events", "Tracked events", ["kind"], registry=registry),
    ]
    gauges = [
        Gauge("demo_level", "A level \\ with a backslash", ["a", "b"], registry=registry),
        TrackedGauge("tracked_level", "A tracked level", ["a", "b"], registry=registry),
    ]
    histograms = [
        Histogram("demo_seconds", "Durations", ["op"], registry=registry),
        TrackedHistogram("tracked_seconds", "Tracked durations", ["op"], registry=registry),
    ]
    custom = VersionedCollector()
    registry.register(custom)
    page = MetricsPage(registry)
    children: dict[tuple[str, ...], Any] = {}  # held, as handlers hold them: labels() is called once

    def child(metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        if key not in children:
            children[key] = metric.labels(*labels)
        return children[key]

    for batch in batches:
        for step, (operation, first, second, value) in enumerate(batch):
            finite = value if isinstance(value, int) or math.isfinite(value) else 1.0
            if operation == "inc":
                child(counters[step % 2], first).inc(abs(finite))
            elif operation == "set":
                child(gauges[step % 2], first, second).set(value)
            elif operation == "observe":
                child(histograms[step % 2], first).observe(finite)
            elif operation == "remove":  # a series goes: the next labels() makes a new child
                metric = histograms[step % 2]
                if (metric._name, first) in children:
                    metric.remove(first)
                    del children[(metric._name, first)]
            elif operation == "clear":
                metric = gauges[step % 2]
                metric.clear()
                for key in [key for key in children if key[0] == metric._name]:
                    del children[key]
            else:
                custom.values[(first, second)] = float(value)
                custom.version += 1
        assert page.render() == text_latest(registry)
        assert page.render() == text_latest(registry)  # served from the cache: still the same


series_samples = st.lists(st.tuples(st.tuples(label_values, label_values), values), max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["counter", "gauge"]), series_samples), min_size=1, max_size=4))
def test_series_families_render_as_their_metrics_do(updates) -> None:
    # one family per kind, updated again and again: the remembered lines must follow every change
    lines: dict = {}
    for kind, samples in updates:
        deduplicated = list(dict(samples).items())  # a series appears once in a family
        families = [
            SeriesFamily(
                "series_" + kind, kind, 'Help "quoted" \\ back\nslash', ("zeta", "alpha"), deduplicated
            ),
            SeriesFamily("series_plain", "gauge", "No labels", (), [((), 1.5)] if samples else []),
        ]
        metrics = SimpleNamespace(collect=lambda families=families: [f.to_metric() for f in families])
        assert render_series(families, lines) == text_latest(metrics).decode()


def test_a_family_handed_again_is_not_walked_again() -> None:
    family = SeriesFamily("kept", "gauge", "Kept", ("k",), [(("a",), 1.0), (("b",), 2.0)])
    lines: dict = {}
    texts: dict = {}
    first = render_series([family], lines, texts)
    lines.clear()  # a walk over the samples would fill it again
    assert render_series([family], lines, texts) == first and not lines
    changed = SeriesFamily("kept", "gauge", "Kept", ("k",), [(("a",), 1.0), (("b",), 3.0)])
    assert render_series([changed], lines, texts) == first.replace("2.0", "3.0")
    assert lines  # another object: walked


def test_the_interference_page_is_generate_latest_after_ingest() -> None:
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    TokenMetrics.register(registry)
    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=0.0, refresh_key_budget=10**9)
    register_interference_metrics(registry, aggregate)
    page = MetricsPage(registry)
    uid = 0
    for step in range(12):
        for network in range(step % 4 + 1):
            uid += 1
            aggregate.add_rows(
                [row(uid, f"X{chr(65 + step % 3)}", f"AS{network + 1}", f"d{step % 5}.example", True)]
            )
        assert page.render() == text_latest(registry)
    assert b'gatewatch_interference_scope{cc="XA",domain="d3.example"' in page.render()


def test_interference_series_are_stale_at_most_the_refresh_interval() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics.register(registry)
    refresh_interval = 0.3
    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=refresh_interval)
    register_interference_metrics(registry, aggregate)
    page = MetricsPage(registry)
    aggregate.add_rows([row(1, "XL", "AS1", "gw.example", True)])
    started = time.monotonic()
    first = page.render()
    aggregate.add_rows([row(2, "XL", "AS2", "gw.example", True)])
    metrics.requests.labels(result="ok").inc()
    second = page.render()
    if time.monotonic() - started < refresh_interval:  # a stalled machine can pass the interval: skip then
        # the ingest counters (no cache key) are never stale; the interference part waits for the snapshot
        assert b'gatewatch_ingest_requests_total{result="ok"} 1.0' in second
        assert b'gatewatch_network_measurements{asn="AS1",cc="XL"} 1.0' in second
        assert b"AS2" not in second
        assert first.split(b"gatewatch_measurements")[1] == second.split(b"gatewatch_measurements")[1]
    time.sleep(refresh_interval - (time.monotonic() - started) + 0.05)
    third = page.render()
    assert b'gatewatch_network_measurements{asn="AS2",cc="XL"} 1.0' in third
    assert third == text_latest(registry)


async def test_pages_rendered_in_threads_while_rows_arrive() -> None:
    # /metrics renders in worker threads while ingest adds rows on the loop; two scrapes may overlap
    registry = CollectorRegistry()
    metrics = IngestMetrics.register(registry)
    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=0.0, refresh_key_budget=10**9)
    register_interference_metrics(registry, aggregate)
    page = MetricsPage(registry)

    def scrapes(compressed: bool) -> None:
        for _ in range(20):
            page.body(compressed=compressed)

    renders = [asyncio.create_task(asyncio.to_thread(scrapes, gz)) for gz in (False, True)]
    for batch in range(150):
        aggregate.add_rows(
            row(batch * 20 + k, "XL", f"AS{batch % 13 + 1}", f"d{batch}.example", True, k) for k in range(20)
        )
        metrics.requests.labels(result="ok").inc()
        await asyncio.sleep(0)
    await asyncio.gather(*renders)
    assert page.render() == text_latest(registry)
    assert gzip.decompress(page.body(compressed=True)) == text_latest(registry)


def test_render_families_formats_only_values_that_changed() -> None:
    def family(values: dict[str, float]) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily("g", "G", labels=["k"])
        for key, value in values.items():
            gauge.add_metric([key], value)
        return gauge

    def expected(gauge: GaugeMetricFamily) -> str:
        return text_latest(SimpleNamespace(collect=lambda: [gauge])).decode()

    lines: dict = {}
    first = family({"a": 1.0, "b": 0.0, "c": 2})
    assert render_families([first], lines) == expected(first)
    remembered = dict(lines)
    # -0.0 equals 0.0 but prints differently: never taken from the cache; 2.0 prints as 2 did
    again = family({"a": 1.0, "b": -0.0, "c": 2.0})
    text = render_families([again], lines)
    assert text == expected(again)
    assert 'g{k="b"} -0.0\n' in text
    assert lines[("g", (("k", "a"),))] is remembered[("g", (("k", "a"),))]
    assert lines[("g", (("k", "c"),))] is remembered[("g", (("k", "c"),))]


@pytest.mark.parametrize(
    ("accept", "cached"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        ("text/*", True),
        ("text/plain", True),
        ("text/plain; version=0.0.4", True),
        (PROMETHEUS_2_ACCEPT, True),
        (PROMETHEUS_3_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0", False),
        ("application/openmetrics-text", False),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", False),
        ("text/plain;version=0.0.4;q=0, application/openmetrics-text", False),
        ("*/*;q=0", False),
        ("text/plain;escaping=allow-utf-8", False),
        ("application/json", False),
    ],
)
def test_accept_headers_that_the_cached_text_answers(accept: str | None, cached: bool) -> None:
    assert accepts_cached_text(accept) is cached


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [(None, False), ("identity", False), ("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False),
     ("GZIP", True), ("br", False)],
)  # fmt: skip
def test_accept_encoding(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


@pytest.fixture
def app_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=0.0, refresh_key_budget=10**9)
    register_interference_metrics(registry, aggregate)
    aggregate.add_rows([row(1, "XL", "AS1", "gw.example", True), row(2, "XL", "AS2", "gw.example", True)])
    return registry


@pytest.fixture
async def scrape(aiohttp_client, app_registry: CollectorRegistry):
    async def handler(request: web.Request) -> web.Response:
        return await metrics_response(app_registry, request)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    client = await aiohttp_client(app, auto_decompress=False)

    async def get(**headers: str):
        response = await client.get("/metrics", headers=headers)
        assert response.status == 200
        return response, await response.read()

    return get


def single_gzip_member(body: bytes) -> bytes:
    """What a reader that stops after the first member (aiohttp's, curl's) gets: it must be everything."""
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = reader.decompress(body)
    assert reader.eof and not reader.unused_data
    return text


async def test_gzip_is_served_when_accepted_and_compressed_piece_by_piece(scrape, app_registry) -> None:
    response, body = await scrape(**{"Accept-Encoding": "gzip", "Accept": PROMETHEUS_2_ACCEPT})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert gzip.decompress(body) == single_gzip_member(body) == text_latest(app_registry)
    page = metrics_page(app_registry)
    assert page.body(compressed=True) is page.body(compressed=True)  # nothing changed: compressed once
    _, again = await scrape(**{"Accept-Encoding": "gzip"})
    assert again == body
    # an ingest counter moves: a new page, whose interference piece is the one compressed before
    [interference] = [c for c in app_registry._collector_to_names if isinstance(c, InterferenceCollector)]
    piece = page._parts[interference].deflated
    app_registry._names_to_collectors["gatewatch_ingest_requests"].labels(result="ok").inc()
    _, changed = await scrape(**{"Accept-Encoding": "gzip"})
    assert single_gzip_member(changed) == text_latest(app_registry) != gzip.decompress(body)
    assert piece is not None and page._parts[interference].deflated is piece
    response, plain = await scrape(**{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in response.headers
    assert plain == text_latest(app_registry)


async def test_openmetrics_only_scrapers_get_openmetrics(scrape, app_registry) -> None:
    for accept in ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"):
        response, body = await scrape(Accept=accept, **{"Accept-Encoding": "identity"})
        assert response.headers["Content-Type"].startswith(OPENMETRICS_TYPE)
        assert response.headers["Content-Type"] == choose_encoder(accept)[1]
        assert body.endswith(b"# EOF\n")
        assert body == openmetrics_latest(app_registry)
    accept = "text/plain;version=1.0.0;escaping=allow-utf-8"
    response, body = await scrape(Accept=accept, **{"Accept-Encoding": "identity"})
    encoder, content_type = choose_encoder(accept)
    assert (response.headers["Content-Type"], body) == (content_type, encoder(app_registry))
    response, body = await scrape(Accept="text/plain", **{"Accept-Encoding": "identity"})
    assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert body == text_latest(app_registry)


async def test_multiprocess_registries_take_prometheus_clients_own_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    Counter("plain_events", "Events", registry=registry).inc()
    assert not metrics_page(registry).cacheable()
    response = await metrics_response(registry)
    assert response.body == text_latest(registry)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert not metrics_page(registry).cacheable()  # the collector alone says so too

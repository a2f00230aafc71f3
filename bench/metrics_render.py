"""/metrics render time with the interference metrics at their cardinality budget.

Fills an aggregate so that every capped label set is full (MAX_COUNTRIES countries plus "other", every
test and blocking label, MAX_NETWORKS_PER_COUNTRY networks plus "other" per country, MAX_INTERFERENCE_ROWS
gateway rows), then prints the series count and how long rendering takes, as a ratio to the same-run
baseline: a bare client_python registry of the same series (plain Gauges holding the values, and the same
ingest metrics) rendered by ``generate_latest``. Measured: the served page (collector/exposition.py) with
nothing new since the last scrape, after an upload moved the ingest metrics only (what most scrapes see:
the interference snapshot refreshes at most every 5 s in the app), and after an ingest when every scrape
sees a new snapshot (the aggregate's refresh interval is 0 here; the app's is 5 s, so at most one scrape
per 5 s pays this), plain and gzip; ``generate_latest`` over the app's registry (the path before the
cache); and the cost of adding rows and of the incremental verdict refresh that the next scrape pays.

    python bench/metrics_render.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.exposition import MetricsPage
from gatewatch.collector.metrics import REQUEST_RESULTS, IngestMetrics
from gatewatch.collector.metrics_interference import (
    BLOCKING_LABELS,
    MAX_COUNTRIES,
    MAX_DOMAINS_PER_COUNTRY,
    MAX_INTERFERENCE_ROWS,
    MAX_NETWORKS_PER_COUNTRY,
    SERIES_BUDGET,
    TEST_LABELS,
    register_interference_metrics,
    series_count,
)
from gatewatch.core.vocabulary import DNS_INJECTION, NO_VERDICT, NOT_BLOCKED

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NETWORKS_PER_COUNTRY = MAX_NETWORKS_PER_COUNTRY + 5  # the extra ones fold into "other"


def country_codes(count: int) -> list[str]:
    return [chr(65 + i // 26) + chr(65 + i % 26) for i in range(count)]


def rows() -> Iterator[SimpleNamespace]:
    countries = country_codes(MAX_COUNTRIES + 5)  # the last five become "other"
    domains_per_country = MAX_INTERFERENCE_ROWS // MAX_COUNTRIES + 1  # enough gateway rows to hit the cap
    assert domains_per_country <= MAX_DOMAINS_PER_COUNTRY
    uid = 0
    for c, cc in enumerate(countries):
        for n in range(NETWORKS_PER_COUNTRY):
            asn = f"AS{64_000 + c * 100 + n}"
            for d in range(domains_per_country):
                for minutes in range(3):
                    uid += 1
                    yield row(uid, cc, asn, f"d{d}.example", True, minutes)
            # every (test, blocking) label combination in every country
            for test in TEST_LABELS:
                for blocking in BLOCKING_LABELS:
                    uid += 1
                    blocked = blocking not in (NOT_BLOCKED, NO_VERDICT)
                    yield row(uid, cc, asn, "other.example", blocked, 5, test, blocking)


def row(uid: int, cc: str, asn: str, domain: str, blocked: bool, minutes: int, test: str = "web",
        blocking: str | None = None) -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(
        measurement_uid=f"{uid:08d}",
        measurement_start_time=NOW - timedelta(minutes=minutes),
        received_at=NOW,
        probe_cc=cc,
        probe_asn=asn,
        test_name=test,
        input=f"https://{domain}/",
        domain=domain,
        blocking=blocking or ("dns" if blocked else NOT_BLOCKED),
        anomaly=blocked,
        technique=DNS_INJECTION if blocked else None,
        fingerprint_key=f"fp-{cc}" if blocked else None,
        flags=(),
    )


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def describe(label: str, millis: list[float], baseline: list[float] | None = None) -> None:
    p95 = sorted(millis)[max(0, round(len(millis) * 0.95) - 1)]
    median = statistics.median(millis)
    ratio = f"   {median / statistics.median(baseline):6.3f}x baseline" if baseline else ""
    print(f"{label:<58} median {median:8.2f} ms   p95 {p95:8.2f} ms   (n={len(millis)}){ratio}")


def bare_registry(families: list[Metric]) -> CollectorRegistry:
    """The same series in a plain client_python registry: a Gauge per family, named as exposed."""
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    for family in families:
        names = sorted({name for s in family.samples for name in s.labels}) or []
        exposed = family.name + ("_total" if family.type == "counter" else "")
        gauge = Gauge(exposed, family.documentation, names, registry=registry)
        for sample in family.samples:
            (gauge.labels(**sample.labels) if names else gauge).set(sample.value)
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=0.0, refresh_key_budget=10**9)
    registry = CollectorRegistry()
    ingest_metrics = IngestMetrics.register(registry)
    collector = register_interference_metrics(registry, aggregate)
    start = time.perf_counter()
    added = aggregate.add_rows(rows())
    add_seconds = time.perf_counter() - start
    start = time.perf_counter()
    aggregate.refresh()
    refresh_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    body = generate_latest(registry)
    interference_series = series_count(collector.collect())
    per_row = add_seconds / added * 1e6
    print(f"rows added                 {added:>10,}  in {add_seconds:.2f} s ({per_row:.1f} us/row)")
    print(f"full verdict refresh       {len(aggregate.interference(scopes=['gateway', 'isp'])):>10,} rows in "
          f"{refresh_seconds * 1000:.0f} ms")  # fmt: skip
    print(f"interference series        {interference_series:>10,}  (budget {SERIES_BUDGET:,})")
    lines = body.count(b"\n")
    print(f"/metrics body              {len(body):>10,}  bytes, {lines:,} lines (with ingest metrics)")
    print(f"peak RSS                   {peak / 2**20:>10.1f}  MiB (the whole process)")

    bare = bare_registry(list(collector.collect()))
    bare_lines = generate_latest(bare).count(b"\n")
    baseline = timed(lambda: generate_latest(bare), args.repeat)
    describe(f"baseline: bare client_python registry ({bare_lines:,} lines)", baseline)
    before = timed(lambda: generate_latest(registry), args.repeat)
    describe("generate_latest(app registry) (before the cache)", before, baseline)

    # Nothing changed since the last scrape: the cached texts are served.
    page = MetricsPage(registry)
    assert page.render() == generate_latest(registry)
    describe("served page, nothing new since the last scrape", timed(page.render, args.repeat), baseline)
    describe(
        "served page gzip, nothing new", timed(lambda: page.body(compressed=True), args.repeat), baseline
    )

    # An upload between two scrapes moves the ingest metrics only (the interference snapshot refreshes at
    # most every 5 s in the app): what most back-to-back scrapes see.
    def upload_metrics() -> None:
        ingest_metrics.requests.labels(result=REQUEST_RESULTS[0]).inc()
        ingest_metrics.items.labels(result="accepted", reason="").inc(10)
        ingest_metrics.request_seconds.observe(0.008)
        ingest_metrics.store_seconds.labels(operation="insert").observe(0.002)
        ingest_metrics.last_accepted.set(time.time())

    def after_upload() -> object:
        upload_metrics()
        return page.body(compressed=True)

    describe("served page gzip after an upload's ingest metrics", timed(after_upload, args.repeat), baseline)
    assert page.render() == generate_latest(registry)

    # A few rows arrived (and a request was counted): a new snapshot, families rebuilt, changed lines redone.
    counter = iter(range(10**9))

    def ingest() -> None:
        n = next(counter)
        aggregate.add_rows([row(10**8 + n, "AA", "AS64000", f"d{n % 5}.example", True, 0)])
        ingest_metrics.requests.labels(result=REQUEST_RESULTS[0]).inc()

    def after_ingest(render: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            ingest()
            return render()

        return run

    served = timed(after_ingest(page.render), args.repeat)
    describe("served page after ingest (new snapshot each scrape)", served, baseline)
    gzipped = timed(after_ingest(lambda: page.body(compressed=True)), args.repeat)
    describe("served page gzip after ingest", gzipped, baseline)
    describe("generate_latest after ingest (before the cache)",
             timed(after_ingest(lambda: generate_latest(registry)), args.repeat), baseline)  # fmt: skip
    assert page.render() == generate_latest(registry)
    print(f"gzip page                  {len(page.body(compressed=True)):>10,}  bytes")

    batch = [
        row(2 * 10**8 + i, "AB", f"AS{64_100 + i % 15}", f"d{i % 5}.example", True, 0) for i in range(1_000)
    ]
    describe("add_rows, batch of 1,000 rows", timed(lambda: aggregate.add_rows(batch), 5))


if __name__ == "__main__":
    main()

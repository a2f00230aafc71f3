"""Tracked metrics: every change moves the key the /metrics page renders them by, and only a change does."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gatewatch.collector.exposition import MetricsPage
from gatewatch.collector.tracked_metrics import TrackedCounter, TrackedGauge, TrackedHistogram


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_every_change_moves_the_key(registry: CollectorRegistry) -> None:
    counter = TrackedCounter("c", "C", ["k"], registry=registry)
    gauge = TrackedGauge("g", "G", registry=registry)
    histogram = TrackedHistogram("h", "H", registry=registry)
    child = counter.labels(k="a")  # a child held, as handlers hold them: its own calls count
    changes = [
        lambda: counter.labels(k="b"),  # a new series
        lambda: child.inc(2),
        child.reset,
        lambda: counter.remove("a"),
        lambda: counter.clear(),
        gauge.inc,
        gauge.dec,
        lambda: gauge.set(7),
        gauge.set_to_current_time,
        lambda: histogram.observe(0.3),
    ]
    for change in changes:
        before = counter.cache_key()
        change()
        assert counter.cache_key() != before
        assert gauge.cache_key() == histogram.cache_key() == counter.cache_key()  # one count for all
    key = counter.cache_key()
    generate_latest(registry)
    assert counter.cache_key() == key  # reading is no change


def test_the_page_renders_tracked_metrics_again_only_after_a_change(registry: CollectorRegistry) -> None:
    counter = TrackedCounter("c", "C", ["k"], registry=registry)
    page = MetricsPage(registry)
    first = page.render()
    rendered = page._parts[counter]
    assert page.render() == first and page._parts[counter] is rendered  # nothing changed: not rendered
    counter.labels(k="a").inc()
    second = page.render()
    assert page._parts[counter] is not rendered
    assert second == generate_latest(registry) != first
    assert b'c_total{k="a"} 1.0' in second


def test_a_tracked_gauge_cannot_follow_a_function(registry: CollectorRegistry) -> None:
    gauge = TrackedGauge("g", "G", registry=registry)
    with pytest.raises(TypeError, match="function"):
        gauge.set_function(lambda: 1.0)

"""Tracked metrics: every change moves the key the /metrics page renders them by, and only a change does."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gatewatch.collector.exposition import MetricsPage
from gatewatch.collector.tracked_metrics import TrackedCounter, TrackedGauge, TrackedHistogram


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_every_change_moves_the_key_of_its_metric_alone(registry: CollectorRegistry) -> None:
    counter = TrackedCounter("c", "C", ["k"], registry=registry)
    gauge = TrackedGauge("g", "G", registry=registry)
    histogram = TrackedHistogram("h", "H", ["op"], registry=registry)
    child = counter.labels(k="a")  # a child held, as handlers hold them: its own calls count
    timer = histogram.labels(op="x")
    changes = [
        (counter, lambda: counter.labels(k="b")),  # a new series
        (counter, lambda: child.inc(2)),
        (counter, child.reset),
        (counter, lambda: counter.remove("a")),
        (counter, lambda: child.inc()),  # a removed child still moves its old parent's key: harmless
        (counter, lambda: counter.clear()),
        (gauge, gauge.inc),
        (gauge, gauge.dec),
        (gauge, lambda: gauge.set(7)),
        (gauge, gauge.set_to_current_time),
        (histogram, lambda: timer.observe(0.3)),
        (histogram, lambda: histogram.labels(op="y").observe(1.5)),
    ]
    metrics = (counter, gauge, histogram)
    for changed, change in changes:
        before = [metric.cache_key() for metric in metrics]
        change()
        for metric, key in zip(metrics, before, strict=True):
            assert (metric.cache_key() != key) is (metric is changed)
    keys = [metric.cache_key() for metric in metrics]
    generate_latest(registry)
    assert [metric.cache_key() for metric in metrics] == keys  # reading is no change


def test_the_page_renders_tracked_metrics_again_only_after_a_change(registry: CollectorRegistry) -> None:
    counter = TrackedCounter("c", "C", ["k"], registry=registry)
    other = TrackedHistogram("h", "H", registry=registry)
    page = MetricsPage(registry)
    first = page.render()
    rendered, other_rendered = page._parts[counter], page._parts[other]
    assert page.render() == first and page._parts[counter] is rendered  # nothing changed: not rendered
    counter.labels(k="a").inc()
    second = page.render()
    assert page._parts[counter] is not rendered
    assert page._parts[other] is other_rendered  # another metric's change renders this one no more
    assert second == generate_latest(registry) != first
    assert b'c_total{k="a"} 1.0' in second


def test_a_tracked_gauge_cannot_follow_a_function(registry: CollectorRegistry) -> None:
    gauge = TrackedGauge("g", "G", registry=registry)
    with pytest.raises(TypeError, match="function"):
        gauge.set_function(lambda: 1.0)

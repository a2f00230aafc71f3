"""workers_metrics.py in one process: a worker's custom counters are summed with the other workers'
snapshots, its gauges are its own, and its snapshot is what the others read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from gatewatch.collector.workers_metrics import WorkersRegistry


class _Custom:
    """A custom collector as metrics_interference.py's: a counter and a gauge by country."""

    def __init__(self, counts: dict[str, float], gauge: float) -> None:
        self.counts, self.gauge = counts, gauge

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily("demo_measurements", "Measurements.", labels=["cc"])
        for cc, value in self.counts.items():
            counter.add_metric([cc], value)
        gauge = GaugeMetricFamily("demo_window", "Rows in the window.")
        gauge.add_metric([], self.gauge)
        return [counter, gauge]


def _values(registry: WorkersRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_custom_counters_add_up_and_gauges_stay_the_workers_own(tmp_path: Path) -> None:
    registry = WorkersRegistry(tmp_path)
    registry.register(_Custom({"XL": 3, "XM": 1}, gauge=7))
    # Two other workers' snapshots (one of them since gone: its counts stay in the sum).
    for pid, rows in ((10_001, [[{"cc": "XL"}, 2]]), (10_002, [[{"cc": "XL"}, 5], [{"cc": "XN"}, 4]])):
        (tmp_path / f"custom-{pid}.json").write_text(json.dumps({"demo_measurements": rows}))
    values = _values(registry)
    assert values[("demo_measurements_total", (("cc", "XL"),))] == 10
    assert values[("demo_measurements_total", (("cc", "XM"),))] == 1
    assert values[("demo_measurements_total", (("cc", "XN"),))] == 4  # a series only another worker has
    assert values[("demo_window", ())] == 7


def test_a_workers_snapshot_holds_its_own_counters_only(tmp_path: Path) -> None:
    registry = WorkersRegistry(tmp_path)
    registry.register(_Custom({"XL": 3}, gauge=7))
    (tmp_path / "custom-10001.json").write_text(json.dumps({"demo_measurements": [[{"cc": "XL"}, 2]]}))
    registry.write_snapshot()
    own = json.loads((tmp_path / f"custom-{os.getpid()}.json").read_text())
    assert own == {"demo_measurements": [[{"cc": "XL"}, 3]]}
    assert _values(registry)[("demo_measurements_total", (("cc", "XL"),))] == 5  # not counted twice


def test_an_unreadable_snapshot_is_skipped(tmp_path: Path) -> None:
    registry = WorkersRegistry(tmp_path)
    registry.register(_Custom({"XL": 3}, gauge=7))
    (tmp_path / "custom-10001.json").write_text('{"demo_measurements": [[')  # caught mid-write
    assert _values(registry)[("demo_measurements_total", (("cc", "XL"),))] == 3

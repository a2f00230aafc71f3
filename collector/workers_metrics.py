"""``/metrics`` of ``gatewatch-collector serve --workers N``: one scrape answers for every worker process.

A scrape reaches whichever worker accepts the connection, so each worker renders the sum over all of
them, from a metrics folder the parent makes (``PROMETHEUS_MULTIPROC_DIR``, set before a worker imports
prometheus_client):

- the ordinary metrics (``Counter``, ``Histogram``, ``Gauge`` of metrics.py) are prometheus_client's
  multiprocess mode: every worker's values live in memory-mapped files there and are summed at scrape time
  (a gauge by its ``multiprocess_mode``; a dead worker's counters stay in the sum, so they never go back);
- the custom collectors' families (the interference metrics of metrics_interference.py, computed from each
  worker's attribution window) are not seen by that mode. Each worker writes its counter families to
  ``custom-<pid>.json`` in the folder every ``SNAPSHOT_INTERVAL`` seconds; a scrape adds every other
  worker's counters to its own (a dead worker's file stays: counters never go back) and keeps its own
  gauges (every worker's window holds the same rows: each follows the others' through peer_sync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = ["MULTIPROC_ENV", "SNAPSHOT_INTERVAL", "WorkersRegistry", "snapshots"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SNAPSHOT_INTERVAL = 1.0  # seconds between writes of a worker's custom counters

_Counts = dict[str, dict[tuple[tuple[str, str], ...], float]]  # family -> labels -> value


def _snapshot_name(pid: int) -> str:
    return f"custom-{pid}.json"


class WorkersRegistry(CollectorRegistry):
    """The application's registry in a worker: metrics register here as usual, and rendering it gives
    every worker's sum (module docstring)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _custom(self) -> list[Collector]:
        with self._lock:
            collectors = list(self._collector_to_names)
        return [c for c in collectors if not isinstance(c, MetricWrapperBase)]

    def own_counts(self) -> _Counts:
        """This worker's custom counter families, as written to its snapshot."""
        counts: _Counts = {}
        for collector in self._custom():
            for family in collector.collect():
                if family.type == "counter":
                    values = counts.setdefault(family.name, {})
                    for sample in family.samples:
                        if sample.name == family.name + "_total":
                            values[tuple(sorted(sample.labels.items()))] = sample.value
        return counts

    def write_snapshot(self) -> None:
        encoded = {
            name: [[dict(labels), value] for labels, value in values.items()]
            for name, values in self.own_counts().items()
        }
        target = self.folder / _snapshot_name(os.getpid())
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps(encoded))
        partial.replace(target)

    def _others(self) -> _Counts:
        total: _Counts = {}
        own = _snapshot_name(os.getpid())
        for path in self.folder.glob("custom-*.json"):
            if path.name == own:
                continue
            try:
                encoded = json.loads(path.read_text())
            except (OSError, ValueError):  # replaced or removed while read: the next scrape has it
                continue
            for name, rows in encoded.items():
                values = total.setdefault(name, {})
                for labels, value in rows:
                    key = tuple(sorted(labels.items()))
                    values[key] = values.get(key, 0.0) + float(value)
        return total

    def collect(self) -> Iterable[Metric]:
        yield from MultiProcessCollector(None, str(self.folder)).collect()
        others = self._others()
        for collector in self._custom():
            for family in collector.collect():
                extra = others.get(family.name)
                if family.type != "counter" or not extra:
                    yield family
                    continue
                yield _added(family, extra)


def _added(family: Metric, extra: dict[tuple[tuple[str, str], ...], float]) -> Metric:
    """A copy of a counter family with the other workers' values added (series only they have included)."""
    merged = Metric(family.name, family.documentation, family.type, family.unit)
    seen = set()
    for sample in family.samples:
        key = tuple(sorted(sample.labels.items()))
        if sample.name == family.name + "_total":
            seen.add(key)
            sample = sample._replace(value=sample.value + extra.get(key, 0.0))
        merged.samples.append(sample)
    name = family.name + "_total"
    merged.samples.extend(Sample(name, dict(k), v) for k, v in extra.items() if k not in seen)
    return merged


@contextlib.asynccontextmanager
async def snapshots(registry: WorkersRegistry) -> AsyncIterator[None]:
    """Write this worker's custom counters every ``SNAPSHOT_INTERVAL`` seconds while the block runs, and
    once more at its end."""

    async def loop() -> None:
        while True:
            await asyncio.to_thread(registry.write_snapshot)
            await asyncio.sleep(SNAPSHOT_INTERVAL)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            registry.write_snapshot()

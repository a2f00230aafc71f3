"""Fixtures for the deployment files: promtool, the dashboard generator, and the metric names the code
exposes (what dashboards and alerts may query)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry

from gatewatch.collector.metrics import ControlMetrics, IngestMetrics, SightingMetrics, TokenMetrics
from gatewatch.collector.metrics_interference import METRIC_NAMES

REPO = Path(__file__).resolve().parents[2]
# Series Prometheus itself adds to every scrape job.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (CI installs Debian's prometheus from .ci/run)")
    return found


@pytest.fixture(scope="session")
def generator() -> ModuleType:
    """dashboards/generate.py (a script, not a package): loaded from its path."""
    name = "gatewatch_dashboards_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "dashboards" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def known_metrics() -> frozenset[str]:
    """Every series name the collector can expose, read from the code itself."""
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    TokenMetrics.register(registry)
    ControlMetrics.register(registry)
    SightingMetrics.register(registry)
    ingest = {sample.name for family in registry.collect() for sample in family.samples}
    # histograms: a _bucket series exists per bucket even before the first observation
    assert "gatewatch_ingest_request_seconds_bucket" in ingest
    return frozenset(ingest) | frozenset(METRIC_NAMES) | PROMETHEUS_SERIES

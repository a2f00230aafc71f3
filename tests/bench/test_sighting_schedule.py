"""bench/sighting_schedule.py (pure), the schedule baseline of bench/time_to_alert.py: the time from a random
moment to the first slice of any agent that holds a blocked URL. The benchmark itself needs Prometheus and
runs for many minutes: it is run by ``python -m bench``, never here."""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
HOUR = 3600.0


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    name = "gatewatch_bench_sighting_schedule"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "sighting_schedule.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def mean_sighting(
    bench: ModuleType, *, slices: int, blocked: int, agents: int = 1, jitter: float = 0.0
) -> float:
    rng = random.Random(7)
    draws = [
        bench.first_sighting(
            rng, interval=6 * HOUR, jitter=jitter, slices=slices, blocked=blocked, agents=agents
        )
        for _ in range(20_000)
    ]
    assert all(0 <= d <= 6 * HOUR + jitter for d in draws)
    return statistics.fmean(draws)


@pytest.mark.parametrize("slices", [1, 24, 72])
def test_one_blocked_url_waits_half_an_interval_whatever_the_slices(bench: ModuleType, slices: int) -> None:
    # Slices do not change how often one agent measures a URL: once per interval, at a uniform moment.
    assert mean_sighting(bench, slices=slices, blocked=1) == pytest.approx(3 * HOUR, rel=0.03)


def test_many_blocked_urls_are_reached_sooner_with_more_slices(bench: ModuleType) -> None:
    one_burst = mean_sighting(bench, slices=1, blocked=60)
    fine = mean_sighting(bench, slices=1000, blocked=60)
    assert one_burst == pytest.approx(3 * HOUR, rel=0.03)  # one slice holds every URL: the next pass
    # The first of 60 uniform moments in the interval: interval / 61 (plus half a slice period).
    assert fine == pytest.approx(6 * HOUR / 61 + 6 * HOUR / 1000 / 2, rel=0.05)
    assert mean_sighting(bench, slices=24, blocked=60) > mean_sighting(bench, slices=72, blocked=60) > fine


def test_more_agents_and_jitter(bench: ModuleType) -> None:
    alone = mean_sighting(bench, slices=72, blocked=60)
    assert mean_sighting(bench, slices=72, blocked=60, agents=3) < alone / 2
    assert mean_sighting(bench, slices=72, blocked=60, jitter=1800) > alone

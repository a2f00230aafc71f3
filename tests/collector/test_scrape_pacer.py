"""/metrics answers at least metrics_min_interval_seconds apart: scrapes that come sooner wait and are
answered together in one wave, with the page as it is when the wave goes (collector/scrape_pacer.py)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.scrape_pacer import ScrapePacer
from gatewatch.collector.settings import Settings

INTERVAL = 0.2
SCRAPE_HEADERS = {"Accept-Encoding": "identity"}


async def test_no_interval_no_wait() -> None:
    pacer = ScrapePacer()
    for _ in range(3):
        await asyncio.wait_for(pacer.wait(0.0), timeout=5)  # would never return if 0 waited for a wave


async def test_a_scrape_after_a_quiet_interval_is_answered_at_once_and_the_next_waits() -> None:
    pacer = ScrapePacer()
    first = time.monotonic()
    await pacer.wait(INTERVAL)
    assert pacer._wave is None  # the first answer did not wait for a wave
    await pacer.wait(INTERVAL)
    assert time.monotonic() - first >= INTERVAL  # the second answer comes an interval after the first
    await asyncio.sleep(INTERVAL)
    third = time.monotonic()
    await pacer.wait(INTERVAL)  # an interval has passed: no wave to wait for
    assert pacer._wave is None and time.monotonic() - third < INTERVAL


async def test_scrapes_that_arrive_meanwhile_share_one_wave_and_a_leaver_cancels_nobody() -> None:
    pacer = ScrapePacer()
    await pacer.wait(INTERVAL)
    released: list[float] = []

    async def scrape() -> None:
        await pacer.wait(INTERVAL)
        released.append(time.monotonic())

    leaver = asyncio.create_task(pacer.wait(INTERVAL))
    tasks = [asyncio.create_task(scrape()) for _ in range(5)]
    await asyncio.sleep(0)
    leaver.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    # one wave: released in the same turn of the loop, not one interval after another
    assert len(released) == 5 and max(released) - min(released) < INTERVAL / 2


async def test_the_app_spaces_its_answers_and_renders_after_the_wait(aiohttp_client, tmp_path) -> None:
    registry = CollectorRegistry()
    settings = Settings(db=f"sqlite:///{tmp_path / 'x.db'}", metrics_min_interval_seconds=INTERVAL)
    client = await aiohttp_client(create_app(settings, registry=registry))
    started = time.monotonic()
    first = await client.get("/metrics", headers=SCRAPE_HEADERS)
    assert first.status == 200
    counter = registry._names_to_collectors["gatewatch_ingest_requests"]
    before = registry.get_sample_value("gatewatch_ingest_requests_total", {"result": "ok"})

    async def count_while_waiting() -> None:
        await asyncio.sleep(INTERVAL / 4)
        counter.labels(result="ok").inc()  # during the second scrape's wait

    second, _ = await asyncio.gather(client.get("/metrics", headers=SCRAPE_HEADERS), count_while_waiting())
    assert second.status == 200 and time.monotonic() - started >= INTERVAL
    line = f'gatewatch_ingest_requests_total{{result="ok"}} {before + 1}'
    assert line in (await second.text()).splitlines()


def test_the_default_interval_is_well_under_a_scrape_interval() -> None:
    assert 0 < Settings().metrics_min_interval_seconds <= 0.1

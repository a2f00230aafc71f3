"""Ingest latency while /metrics is scraped, next to ingest latency with no scrape, in the same run.

A collector runs in its own process on 127.0.0.1 (the real app, SQLite, the interference aggregate filled
to its cardinality budget as in bench/metrics_render.py, ~8.5k series). This process uploads pre-signed
batches one at a time at a steady pace and records each answer's latency; a third process scrapes
/metrics the way Prometheus does (its default Accept header, gzip) in one of these phases:

- ``none``: no scrape (the baseline);
- ``back-to-back``: the next scrape as soon as the last one was read (the app's /metrics as configured by
  default: the cached page, gzip, answers at least ``metrics_min_interval_seconds`` apart,
  collector/scrape_pacer.py);
- ``back-to-back plain``: the same without gzip;
- ``paced 1s``: one scrape a second (a tight Prometheus scrape interval);
- ``unpaced back-to-back``: the cached page, gzip, with no minimum interval between answers (the app with
  ``metrics_min_interval_seconds = 0``);
- ``constant back-to-back``: a constant body of the gzip page's size answered from memory on the event
  loop, with no minimum interval: what any unpaced answer costs at least (the HTTP request and response);
- ``uncached back-to-back``: ``generate_latest`` over the app's registry in a worker thread at every
  scrape, the path before collector/exposition.py (the issue's ×4.1).

After a warm-up, each round runs every phase once (in a rotated order); a phase's figure is its p50 and p99
divided by the same round's ``none``, and the report gives the median and the spread over the rounds.

    python bench/scrape_latency.py [--rounds 3] [--requests 150] [--batch 10] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import metrics_render
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ingest import CONTROL_SECRET, page_load_keys
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import REGISTRY_KEY
from gatewatch.collector.exposition import metrics_page
from gatewatch.collector.interference_api import AGGREGATE_KEY
from gatewatch.collector.metrics import metrics_response
from gatewatch.collector.settings import Settings
from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import envelope
from gatewatch.core.measurement import Measurement, utc_now

UNCACHED_PATH = "/bench/metrics-uncached"
UNPACED_PATH = "/bench/metrics-unpaced"
CONSTANT_PATH = "/bench/metrics-constant"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
# phase -> (path, gzip, seconds between scrapes; None: no scrape)
PHASES: dict[str, tuple[str, bool, float] | None] = {
    "none": None,
    "back-to-back": ("/metrics", True, 0.0),
    "back-to-back plain": ("/metrics", False, 0.0),
    "paced 1s": ("/metrics", True, 1.0),
    "unpaced back-to-back": (UNPACED_PATH, True, 0.0),
    "constant back-to-back": (CONSTANT_PATH, True, 0.0),
    "uncached back-to-back": (UNCACHED_PATH, False, 0.0),
}
MAX_SCRAPE_SECONDS = 600.0  # every scrape loop stops by then whatever happens


# -- the collector's process ------------------------------------------------------------------------------


async def serve(db: Path) -> None:
    settings = Settings(db=f"sqlite:///{db}", key_burst=1_000_000, key_rate=1_000.0, accept_identified=True,
                        control_signing_secret=CONTROL_SECRET)  # fmt: skip
    app = create_app(settings)
    registry = app[REGISTRY_KEY]

    async def uncached(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, content_type="text/plain")

    async def unpaced(request: web.Request) -> web.Response:
        return await metrics_response(registry, request, min_interval=0.0)

    constant: list[bytes] = []

    async def constant_page(request: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Content-Encoding": "gzip"}
        return web.Response(body=constant[0], headers=headers)

    app.router.add_get(UNCACHED_PATH, uncached)
    app.router.add_get(UNPACED_PATH, unpaced)
    app.router.add_get(CONSTANT_PATH, constant_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    metrics_render.NOW = datetime.now(UTC)  # the rows must sit in the attribution window
    aggregate = app[AGGREGATE_KEY]
    aggregate.add_rows(metrics_render.rows())
    aggregate.refresh(key_budget=10**9)
    generate_latest(registry)  # the first snapshot
    constant.append(metrics_page(registry).body(compressed=True))
    print(runner.addresses[0][1], flush=True)
    try:
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
    finally:
        await runner.cleanup()


# -- the scraper's process --------------------------------------------------------------------------------


def scrape_loop(port: int, path: str, gzip: bool, pause: float, stop: Any, count: Any) -> None:
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip" if gzip else "identity"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + MAX_SCRAPE_SECONDS
    while not stop.is_set() and time.monotonic() < deadline:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"scrape answered {response.status}")
        count.value += 1
        if pause:
            stop.wait(pause)
    connection.close()


# -- this process: the uploads ----------------------------------------------------------------------------


def signed_batches(count: int, size: int) -> list[list[dict[str, Any]]]:
    keys = page_load_keys()
    assert keys.control is not None
    vouch = ControlSigner(CONTROL_SECRET.encode()).sign("http://site.lab/", keys.control, utc_now())
    keys = keys.model_copy(update={"control_vouch": vouch})
    batches = []
    for _ in range(count):
        key = Ed25519PrivateKey.generate()
        batch = []
        for _ in range(size):
            now = utc_now()
            m = Measurement(
                measurement_start_time=now,
                test_start_time=now,
                test_runtime=0.05,
                input="http://site.lab/",
                probe_asn="AS64501",
                probe_cc="XL",
                test_keys=keys,
            )
            batch.append(envelope.sign(m.to_json_bytes(), key).model_dump())
        batches.append(batch)
    return batches


async def upload(port: int, batches: list[list[dict[str, Any]]], interval: float) -> list[float]:
    url = f"http://127.0.0.1:{port}/api/v1/measurements"
    latencies = []
    async with aiohttp.ClientSession() as session:
        next_at = time.perf_counter()
        for batch in batches:
            started = time.perf_counter()
            async with session.post(url, json={"measurements": batch}) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit(f"upload answered {response.status}")
            next_at = max(next_at + interval, time.perf_counter())
            await asyncio.sleep(next_at - time.perf_counter())
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_phase(
    port: int, phase: str, batches: list[list[dict[str, Any]]], interval: float
) -> tuple[float, float, int]:
    stop, count = multiprocessing.Event(), multiprocessing.Value("i", 0)
    scraper = None
    if PHASES[phase] is not None:
        path, gzip, pause = PHASES[phase]
        scraper = multiprocessing.Process(target=scrape_loop, args=(port, path, gzip, pause, stop, count))
        scraper.start()
        time.sleep(0.5)  # the scrapes are under way before the first upload
    try:
        latencies = asyncio.run(upload(port, batches, interval))
    finally:
        stop.set()
        if scraper is not None:
            scraper.join(timeout=60)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), count.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150, help="uploads per phase")
    parser.add_argument("--batch", type=int, default=10, help="measurements per upload")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between upload starts")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the collector's process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve:
        asyncio.run(serve(args.serve))
        return

    phases = list(PHASES)
    signed = signed_batches(args.rounds * len(phases) * args.requests, args.batch)
    warm_up = signed_batches(min(args.requests, 50), args.batch)
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as tmp:
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(Path(tmp) / "bench.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            run_phase(port, "none", warm_up, args.interval)  # connections, caches, SQLite pages
            results: dict[str, list[tuple[float, float, int]]] = {phase: [] for phase in phases}
            for round_number in range(args.rounds):
                order = phases[round_number % len(phases) :] + phases[: round_number % len(phases)]
                for phase in order:
                    batches, signed = signed[: args.requests], signed[args.requests :]
                    results[phase].append(run_phase(port, phase, batches, args.interval))
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=60)
    print(f"uploads of {args.batch} measurements every {args.interval * 1000:.0f} ms, {args.requests} per "
          f"phase, {args.rounds} rounds after a warm-up; the aggregate at the cardinality budget; ratios to "
          "the same round's 'none' (median [min-max])")  # fmt: skip
    for phase in phases:
        p50 = [r[0] for r in results[phase]]
        p99 = [r[1] for r in results[phase]]
        ratio50 = [r[0] / base[0] for r, base in zip(results[phase], results["none"], strict=True)]
        ratio99 = [r[1] / base[1] for r, base in zip(results[phase], results["none"], strict=True)]
        scrapes = statistics.median(r[2] for r in results[phase])
        print(f"{phase:<24} ingest p50 {statistics.median(p50) * 1000:7.1f} ms  "
              f"x{statistics.median(ratio50):5.2f} "
              f"[{min(ratio50):.2f}-{max(ratio50):.2f}]   p99 {statistics.median(p99) * 1000:7.1f} ms  "
              f"x{statistics.median(ratio99):5.2f} [{min(ratio99):.2f}-{max(ratio99):.2f}]   "
              f"scrapes/phase {scrapes:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()

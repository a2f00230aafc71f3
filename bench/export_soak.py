"""Ingest latency while an API export runs, against the same ingest without one (same run, same collector).

    python bench/export_soak.py                      # 100,000 stored rows, 20 s per phase, 200 measurements/s
    python bench/export_soak.py --rows 20000 --seconds 10 --format jsonl

A scaled-down soak (issue 16 asks for 12 minutes at half the peak rate with an export every 2 minutes):
the collector runs as its own process (``gatewatch-collector serve`` on 127.0.0.1, SQLite pre-filled with
``--rows`` stored measurements as bench/export.py fills it); this process uploads pre-signed batches of 10
at a fixed rate (open loop: a slow answer does not delay the next upload) and times each. Phase "alone":
ingest only. Phase "during export": the same ingest while exports of the whole store are downloaded back
to back. The figure is p50/p99 ingest latency in each phase and their ratio (goal: p99 ≤ 1.5× alone).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gatewatch.lab.scripts import console_script

HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> Any:
    """A bench script beside this one, loaded by path (so that it works with python -P too)."""
    spec = importlib.util.spec_from_file_location(f"gatewatch_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_bench, ingest_bench = _sibling("export"), _sibling("ingest")  # the same stored rows and uploads
BATCH = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the collector did not start within 60 s")


async def _ingest(
    session: aiohttp.ClientSession, base: str, batches: list[list[dict[str, Any]]], rate: float
) -> list[float]:
    """Each batch at its scheduled time (rate in batches/s); returns each upload's seconds."""
    latencies: list[float] = []

    async def one(batch: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        async with session.post(f"{base}/api/v1/measurements", json={"measurements": batch}) as response:
            results = (await response.json())["results"]
        if response.status != 200 or {r["status"] for r in results} != {"accepted"}:
            raise SystemExit(f"unexpected answer {response.status}: {results[:1]}")
        latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    tasks = []
    for i, batch in enumerate(batches):
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(batch)))
    await asyncio.gather(*tasks)
    return latencies


async def _exports(
    session: aiohttp.ClientSession, base: str, fmt: str, stop: asyncio.Event
) -> tuple[int, float]:
    """Whole-store exports back to back until ``stop``; returns bytes read and seconds spent."""
    size, started = 0, time.perf_counter()
    while not stop.is_set():
        async with session.get(f"{base}/api/v1/measurements/export", params={"format": fmt}) as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                size += len(chunk)
                if stop.is_set():
                    break
    return size, time.perf_counter() - started


def _summary(label: str, latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49] * 1000, cuts[98] * 1000
    print(f"{label:<16} uploads {len(latencies):>5}  p50 {p50:8.1f} ms  p99 {p99:8.1f} ms")
    return p50, p99


async def soak(db: Path, fmt: str, seconds: float, rate: float) -> None:
    per_phase = int(seconds * rate)
    warm = int(rate)  # one second of warm-up uploads
    signed = ingest_bench.signed_batches(BATCH * (warm + 2 * per_phase))  # each measurement uploaded once
    batches = [batch[i : i + BATCH] for batch in signed for i in range(0, len(batch), BATCH)]
    port = _free_port()
    env = {
        **os.environ,
        "GATEWATCH_ACCEPT_IDENTIFIED": "true",
        "GATEWATCH_CONTROL_SIGNING_SECRET": ingest_bench.CONTROL_SECRET,
        "GATEWATCH_KEY_BURST": "1000000",
        "GATEWATCH_KEY_RATE": "1000",
        "GATEWATCH_LOG_LEVEL": "WARNING",
    }
    command = [
        console_script("gatewatch-collector"),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        f"sqlite:///{db}",
    ]
    server = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            await _wait_ready(session, base)
            await _ingest(session, base, batches[:warm], rate)
            alone = await _ingest(session, base, batches[warm : warm + per_phase], rate)
            stop = asyncio.Event()
            exporting = asyncio.create_task(_exports(session, base, fmt, stop))
            await asyncio.sleep(1.0)  # the export is under way
            during = await _ingest(session, base, batches[warm + per_phase :], rate)
            stop.set()
            size, spent = await exporting
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    a50, a99 = _summary("alone", alone)
    d50, d99 = _summary(f"during {fmt} export", during)
    print(f"ratio during/alone: p50 {d50 / a50:.2f}x  p99 {d99 / a99:.2f}x  (goal p99 <= 1.5x)")
    print(f"exported {size / 2**20:.1f} MiB in {spent:.1f} s while ingesting")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="stored rows the export reads")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="ingest batches of 10 per second")
    parser.add_argument("--format", default="csv", choices=("csv", "jsonl", "parquet", "ooni"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-soak-") as tmp:
        db = Path(tmp) / "gatewatch.db"
        asyncio.run(export_bench.fill(db, args.rows, 0.5))
        asyncio.run(soak(db, args.format, args.seconds, args.rate))


if __name__ == "__main__":
    main()

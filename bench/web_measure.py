"""CPU time per `web` measurement through the emulated network, and peak RSS of a 1,000-URL run.

    python bench/web_measure.py [URLS] [CONCURRENCY]

The lab runs in a child process, so the figures are the probe side's alone. URLs cycle over the default
scenario's domains (clean, censored, blackholed: the mix a real list has) with distinct paths; the
blackholed ones wait for the TCP timeout, which is wall time, not CPU. Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import statistics
import sys
import time
from typing import Any

from gatewatch.probes.config import WebConfig


def _serve_lab(conn: Any, stop: Any) -> None:
    from gatewatch.lab import Lab

    async def run() -> None:
        async with Lab() as lab:
            conn.send((lab.web_config("isp-a"), lab.urls()))
            await asyncio.to_thread(stop.wait, 900)  # bounded: the lab never outlives a stuck parent long

    asyncio.run(run())


async def _run(config: WebConfig, urls: list[str], concurrency: int) -> tuple[list[float], float]:
    from gatewatch.probes.web import measure

    slots = asyncio.Semaphore(concurrency)
    cpu: list[float] = []

    async def one(url: str) -> None:
        async with slots:
            # CPU time of this measurement alone is not separable under concurrency; the per-URL figure
            # below is total process CPU / URLs. Individual samples come from a sequential warm-up.
            await measure(url, config)

    for url in urls[:50]:  # sequential: per-measurement CPU samples
        t0 = time.process_time()
        await measure(url, config)
        cpu.append(time.process_time() - t0)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    total_cpu = time.process_time() - start_cpu
    print(f"concurrent run: {len(urls)} URLs in {time.perf_counter() - start_wall:.1f} s wall, "
          f"{total_cpu:.2f} s CPU = {1000 * total_cpu / len(urls):.2f} ms CPU per URL")  # fmt: skip
    return cpu, total_cpu


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    parent, child = mp.Pipe()
    stop = mp.Event()
    lab = mp.get_context("fork").Process(target=_serve_lab, args=(child, stop), daemon=True)
    lab.start()
    try:
        config, base_urls = parent.recv()
        urls = [f"{u}p/{i}" for i in range(n // len(base_urls) + 1) for u in base_urls][:n]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu, _ = asyncio.run(_run(config, urls, concurrency))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ms = sorted(c * 1000 for c in cpu)
        print(f"sequential: median {statistics.median(ms):.2f} ms CPU per web measurement "
              f"(p90 {ms[int(len(ms) * 0.9)]:.2f} ms) over {len(ms)} measurements")  # fmt: skip
        print(f"peak RSS: {peak:.1f} MiB for a {n}-URL run at concurrency {concurrency} "
              f"(after imports, before measuring: {rss_before:.1f} MiB)")  # fmt: skip
        print(f"scapy imported: {'scapy' in sys.modules}")
    finally:
        stop.set()
        lab.join(timeout=5)


if __name__ == "__main__":
    main()

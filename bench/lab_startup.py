"""Print the median start and close times of the default lab (python bench/lab_startup.py [runs])."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from gatewatch.lab import Lab


async def measure(runs: int) -> tuple[list[float], list[float]]:
    starts, closes = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        lab = await Lab.start()
        t1 = time.perf_counter()
        await lab.close()
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        closes.append(t2 - t1)
    return starts, closes


def summary(what: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"lab {what}: median {statistics.median(ms):.1f} ms "
        f"(min {min(ms):.1f}, max {max(ms):.1f}) over {len(ms)} runs"
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    starts, closes = asyncio.run(measure(runs))
    print(summary("start", starts))
    print(summary("close", closes))


if __name__ == "__main__":
    main()

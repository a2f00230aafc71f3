"""Export throughput and peak memory, per format, for synthetic stored measurements.

    python bench/export.py                  # 100,000 rows, every format, one child process each
    python bench/export.py --rows 20000 --format jsonl

Each format runs in its own process so that its peak RSS is its own. Rows are made on demand from one
real measurement payload (as the store's iterator hands them out), so the source holds no memory; the
"source only" line is the cost of making the rows, included in every other figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gatewatch.collector.export_cmd import export_partitioned
from gatewatch.collector.exports import export
from gatewatch.collector.store.base import StoredMeasurement
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.verdicts import Fingerprint, Verdict
from gatewatch.core.vocabulary import DNS_INJECTION

FORMATS = ("source", "jsonl", "csv", "parquet", "partitioned-jsonl", "partitioned-csv")
START = datetime(2026, 11, 1, tzinfo=UTC)


def _template() -> StoredMeasurement:
    fingerprint = Fingerprint(technique=DNS_INJECTION, stage="dns", injected_ips=["10.10.34.35"])
    verdict = Verdict(
        blocking="dns", accessible=False, fingerprint=fingerprint, dns_consistency="inconsistent"
    )
    measurement = Measurement(
        measurement_start_time=START,
        test_start_time=START,
        test_runtime=1.2,
        probe_asn="AS64501",
        probe_cc="KH",
        input="https://example.org/",
        test_keys=WebTestKeys(verdict=verdict),
    )
    return StoredMeasurement(
        measurement_uid=measurement.measurement_uid,
        received_at=START,
        measurement_start_time=START,
        probe_cc="KH",
        probe_asn="AS64501",
        test_name="web",
        input="https://example.org/",
        domain="example.org",
        blocking="dns",
        anomaly=True,
        technique=DNS_INJECTION,
        fingerprint_key=fingerprint.key,
        verdict_json=verdict.model_dump_json(),
        payload=measurement.to_json_bytes(),
    )


async def synthetic(count: int) -> AsyncIterator[StoredMeasurement]:
    template = _template()
    for i in range(count):
        when = START + timedelta(seconds=30 * i)  # 100,000 rows span about 35 days
        yield replace(
            template,
            measurement_uid=f"{i:08d}-0000-7000-8000-000000000000",
            input=f"https://example.org/{i}",
            probe_cc=("KH", "MM", "TH", "VN")[i % 4],
            measurement_start_time=when,
            received_at=when + timedelta(minutes=2),
        )


async def run_one(fmt: str, rows: int) -> dict[str, float | int | str]:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    size = 0
    if fmt == "source":
        async for _ in synthetic(rows):
            pass
    elif fmt.startswith("partitioned-"):
        with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as out:
            files = await export_partitioned(synthetic(rows), Path(out), fmt.removeprefix("partitioned-"))
            size = sum(path.stat().st_size for path in files)
    else:
        async for chunk in export(fmt, synthetic(rows)):
            size += len(chunk)
    elapsed = time.perf_counter() - started
    return {
        "format": fmt,
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "output_mib": round(size / 2**20, 1),
        "rss_before_mib": round(rss_before / 1024, 1),  # ru_maxrss is in KiB on Linux
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--format", choices=FORMATS, help="run one format in this process (JSON line out)")
    args = parser.parse_args()
    if args.format:
        print(json.dumps(asyncio.run(run_one(args.format, args.rows))))
        return
    widths = (-18, 8, 8, 9, 11, 11, 9)  # negative: left-aligned

    def line(*cells: object) -> str:
        return " ".join(
            f"{cell!s:<{-w}}" if w < 0 else f"{cell!s:>{w}}" for cell, w in zip(cells, widths, strict=True)
        )

    print(line("format", "rows", "seconds", "rows/s", "output MiB", "RSS before", "peak RSS"))
    for fmt in FORMATS:
        child = [sys.executable, __file__, "--format", fmt, "--rows", str(args.rows)]
        result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        keys = ("rows", "seconds", "rows_per_s", "output_mib")
        print(
            line(
                fmt, *(result[k] for k in keys), f"{result['rss_before_mib']}M", f"{result['peak_rss_mib']}M"
            )
        )


if __name__ == "__main__":
    main()

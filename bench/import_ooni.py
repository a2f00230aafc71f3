"""``import-ooni`` throughput: OONI Web Connectivity lines per second, against a bare ``json.loads`` loop.

    python bench/import_ooni.py                 # 5,000 synthetic OONI measurements
    python bench/import_ooni.py --rows 500      # quick

The lines are synthetic OONI Web Connectivity measurements (df-000/001/002/005 shapes, a control, a
~2 KiB page body), half of them with an injected DNS answer, spread over 20 networks of one country. The
figures, each over the same lines in the same run:

- the baseline: ``json.loads`` of every line (the least any importer must do);
- mapping onto gatewatch's observations (``measurement_from_ooni``);
- mapping and gatewatch's analysis (``judge_ooni``);
- the whole command's work: reading a .jsonl.gz, judging, and storing in a fresh SQLite store.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gatewatch.analysis import load_default_fingerprints
from gatewatch.collector.import_ooni import import_files, judge_ooni, measurement_from_ooni
from gatewatch.collector.store import open_store

SITE_IP = "93.184.216.34"


def ooni_line(i: int, started: datetime) -> bytes:
    injected = i % 2 == 0
    host = f"site{i % 50}.example"
    answer = "10.10.34.35" if injected else SITE_IP
    body = "<html><head><title>Example</title></head><body>" + "x" * 2000 + "</body></html>"
    doc: dict[str, Any] = {
        "input": f"http://{host}/",
        "measurement_start_time": (started + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"),
        "test_start_time": started.strftime("%Y-%m-%d %H:%M:%S"),
        "probe_asn": f"AS{64500 + i % 20}",
        "probe_cc": "XL",
        "probe_ip": "127.0.0.1",
        "report_id": f"20261204T000000Z_webconnectivity_XL_{64500 + i % 20}_n1_{i:016x}",
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_name": "web_connectivity",
        "test_version": "0.4.3",
        "test_runtime": 1.2,
        "test_keys": {
            "queries": [
                {
                    "answers": [{"answer_type": "A", "ipv4": answer, "ttl": 300}],
                    "engine": "getaddrinfo",
                    "failure": None,
                    "hostname": host,
                    "query_type": "A",
                    "rcode": 0,
                    "resolver_address": "",
                    "t0": 0.0,
                    "t": 0.05,
                }
            ],
            "tcp_connect": [
                {
                    "ip": answer,
                    "port": 80,
                    "status": {
                        "success": not injected,
                        "failure": "generic_timeout_error" if injected else None,
                    },
                    "t0": 0.05,
                    "t": 0.1,
                }
            ],
            "requests": [
                {
                    "failure": "generic_timeout_error" if injected else None,
                    "request": {"url": f"http://{host}/", "method": "GET", "headers_list": [["Host", host]]},
                    "response": None
                    if injected
                    else {"code": 200, "body": body, "headers_list": [["Content-Type", "text/html"]]},
                    "t0": 0.1,
                    "t": 0.3,
                }
            ],
            "control": {
                "dns": {"failure": None, "addrs": [SITE_IP]},
                "tcp_connect": {f"{SITE_IP}:80": {"status": True, "failure": None}},
                "http_request": {
                    "status_code": 200,
                    "body_length": len(body),
                    "title": "Example",
                    "headers": {"Content-Type": "text/html"},
                    "failure": None,
                },
            },
            "control_failure": None,
        },
    }
    return (json.dumps(doc) + "\n").encode()


def timed(label: str, count: int, run: Callable[[], object], baseline: float | None) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    rate = count / seconds
    ratio = f" ({baseline / rate:.1f}x the baseline's time)" if baseline else ""
    print(f"{label}: {count} rows in {seconds:.2f} s = {rate:,.0f} rows/s{ratio}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    lines = [ooni_line(i, started) for i in range(args.rows)]
    fingerprints = load_default_fingerprints()
    now = datetime.now(UTC)
    size = sum(map(len, lines)) / len(lines)
    print(f"{args.rows} synthetic OONI Web Connectivity lines, {size:,.0f} bytes each")
    baseline = timed("baseline json.loads", args.rows, lambda: [json.loads(line) for line in lines], None)
    timed("map to observations", args.rows, lambda: [measurement_from_ooni(line) for line in lines], baseline)
    timed(
        "map + analyse",
        args.rows,
        lambda: [judge_ooni(line, fingerprints, (), now) for line in lines],
        baseline,
    )
    with tempfile.TemporaryDirectory(prefix="gatewatch-import-bench-") as tmp:
        source = Path(tmp) / "ooni.jsonl.gz"
        source.write_bytes(gzip.compress(b"".join(lines)))

        async def whole() -> None:
            store = await open_store(f"sqlite:///{Path(tmp) / 'store.db'}")
            try:
                report = await import_files([source], store, fingerprints)
                assert report.imported == args.rows, report
            finally:
                await store.close()

        timed("import-ooni (gz read + analyse + SQLite)", args.rows, lambda: asyncio.run(whole()), baseline)


if __name__ == "__main__":
    main()

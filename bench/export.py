"""Export rows/s from a real SQLite store, per format, beside bare baselines measured in the same run.

    python bench/export.py                        # 200,000 and 400,000 rows
    python bench/export.py --rows 20000           # one size
    python bench/export.py --token-share 0        # every row signed by a long-term key (no payload in CSV)
    python bench/export.py --store postgres       # a throwaway PostgreSQL cluster (initdb/pg_ctl) instead

The store is filled once per size through ``SQLiteStore.insert_many`` (half the rows token-signed by
default, so that the CSV and Parquet carry their signed payload, base64). Each export runs the API's engine
(``export_stream.stream_export``: pages read through the store, encoded on a worker thread; the API runs
it in a child process, export_process.py) in a child process of its own, so that its peak RSS is its
own; "memory flat" compares those peaks across sizes.

Baselines, same run and same rows: ``duckdb COPY csv|parquet`` is DuckDB writing the same summary from a
table it already holds (loaded untimed; one thread, as the export's conversion); ``bare json`` reads the
stored payloads with sqlite3 and round-trips each through ``json.loads``/``json.dumps``, the least a JSON
Lines export that re-encodes every measurement must do. ``partitioned-*`` is ``gatewatch-collector export``
(daily gzip files per country: ``export_cmd.export_selection``, pages encoded as for the API).

With ``--store postgres`` the store is a PostgreSQL database in a cluster of the bench's own (unix socket
only; bench/ingest_scale.py's ``Cluster``); ``bare json`` then reads the payloads with asyncpg, and ``row
csv``, ``row jsonl`` and ``row ooni`` are the row paths the COPY path and the column pages replaced
(export_postgres.py, export_lines.py): ``exports.export(fmt, store.iterate())``, on either store.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb

from gatewatch.collector.export_cmd import export_selection
from gatewatch.collector.export_stream import stream_export
from gatewatch.collector.exports import COLUMN_TYPES, duckdb_config, export
from gatewatch.collector.store import open_store
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.verdicts import Fingerprint, Verdict
from gatewatch.core.vocabulary import DNS_INJECTION, SCHEME_BLIND_TOKEN

FORMATS = ("csv", "parquet", "jsonl", "ooni", "partitioned-csv", "partitioned-jsonl", "partitioned-parquet")
ROW_PATHS = ("row csv", "row jsonl", "row ooni")  # the exact path, StoredMeasurement rows: exports.export
BASELINES = ("duckdb COPY csv", "duckdb COPY parquet", "bare json")
START = datetime(2026, 11, 1, tzinfo=UTC)
INSERT_BATCH = 5000
HERE = Path(__file__).resolve().parent


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


def synthetic(index: int, template: StoredMeasurement, token_every: int) -> StoredMeasurement:
    when = START + timedelta(seconds=30 * index)
    row = replace(
        template,
        measurement_uid=f"{index:08d}-0000-7000-8000-000000000000",
        input=f"https://example.org/{index}",
        probe_cc=("KH", "MM", "TH", "VN")[index % 4],
        measurement_start_time=when,
        received_at=when + timedelta(minutes=2),
    )
    if token_every and index % token_every == 0:
        row = replace(
            row,
            signature_scheme=SCHEME_BLIND_TOKEN,
            signature=b"\x01" * 64,
            ephemeral_key=b"\x02" * 32,
            token=b"\x03" * 288,
            token_epoch=2900,
            token_key_id="k" * 16,
        )
    return row


def _url(db: str) -> str:
    return db if db.startswith("postgresql://") else f"sqlite:///{db}"


async def fill(db: str | os.PathLike[str], rows: int, token_share: float) -> None:
    """Store ``rows`` synthetic measurements in ``db`` (a SQLite file's path or a PostgreSQL URL)."""
    db = os.fspath(db)
    store = await open_store(_url(db))
    template = _template()
    token_every = round(1 / token_share) if token_share > 0 else 0
    # PostgreSQL keeps every row's long-term envelope (never exported); SQLite may go without.
    envelope = (b"S" * 64, b"K" * 32) if db.startswith("postgresql://") else None
    try:
        for first in range(0, rows, INSERT_BATCH):
            batch = [
                synthetic(i, template, token_every) for i in range(first, min(rows, first + INSERT_BATCH))
            ]
            await store.insert_many(batch, [envelope] * len(batch))
    finally:
        await store.close()


async def run_export(db: str, work: Path, fmt: str) -> int:
    store = await open_store(_url(db))
    size = 0
    try:
        if fmt.startswith("row "):  # the row path (PostgreSQL's before COPY and before column pages)
            async for chunk in export(fmt.split(" ")[1], store.iterate(MeasurementFilter())):
                size += len(chunk)
            return size
        if fmt.startswith("partitioned-"):  # gatewatch-collector export: daily gzip files per country
            out = work / f"tree-{fmt}"
            files = await export_selection(store, MeasurementFilter(), out, fmt.split("-")[1])
            size = sum(file.stat().st_size for file in files)
            shutil.rmtree(out)
        else:
            async for chunk in stream_export(store, fmt, MeasurementFilter(), tmp_dir=work):
                size += len(chunk)
    finally:
        await store.close()
    return size


async def _bare_json_postgres(url: str) -> int:
    size = 0
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            query = "SELECT payload FROM measurements ORDER BY measurement_start_time"
            async for (payload,) in conn.cursor(query, prefetch=2000):
                size += len(json.dumps(json.loads(payload), ensure_ascii=False, separators=(",", ":")))
    finally:
        await conn.close()
    return size


def run_baseline(db: str, work: Path, which: str) -> int:
    if which == "bare json" and db.startswith("postgresql://"):
        return asyncio.run(_bare_json_postgres(db))
    if which == "bare json":
        size = 0
        with sqlite3.connect(db) as conn:
            cursor = conn.execute("SELECT payload FROM measurements ORDER BY measurement_start_time")
            while rows := cursor.fetchmany(2000):
                for (payload,) in rows:
                    size += len(json.dumps(json.loads(payload), ensure_ascii=False, separators=(",", ":")))
        return size
    fmt = which.rsplit(" ", 1)[1]
    csv_path = work / "summary.csv"
    if not csv_path.exists():  # the same summary, made once (untimed: DuckDB's own load is not the figure)
        csv_path.write_bytes(asyncio.run(_summary_csv(db)))
    with duckdb.connect(":memory:", config=duckdb_config(threads=1, temp_directory=str(work))) as con:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMN_TYPES.items()) + "}"
        con.execute(
            f"CREATE TABLE t AS SELECT * FROM read_csv('{csv_path}', header = true, columns = {columns})"
        )
        target = work / f"copy.{fmt}"
        started = time.perf_counter()
        options = (
            "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 50000" if fmt == "parquet" else "FORMAT csv"
        )
        con.execute(f"COPY t TO '{target}' ({options})")
        global _COPY_SECONDS
        _COPY_SECONDS = time.perf_counter() - started
        size = target.stat().st_size
        target.unlink()
        return size


_COPY_SECONDS = 0.0


async def _summary_csv(db: str) -> bytes:
    store = await open_store(_url(db))
    try:
        return b"".join([chunk async for chunk in stream_export(store, "csv", MeasurementFilter())])
    finally:
        await store.close()


def child(db: str, work: Path, what: str, rows: int) -> dict[str, object]:
    started = time.perf_counter()
    size = run_baseline(db, work, what) if what in BASELINES else asyncio.run(run_export(db, work, what))
    elapsed = _COPY_SECONDS if what.startswith("duckdb") else time.perf_counter() - started
    return {
        "what": what,
        "rows": rows,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
        "output_mib": round(size / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _cluster_class() -> type:
    """bench/ingest_scale.py's throwaway cluster, loaded by path."""
    spec = importlib.util.spec_from_file_location("gatewatch_bench_ingest_scale", HERE / "ingest_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Cluster


async def _new_database(cluster: Any) -> str:
    name = "export_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(cluster.url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return cluster.url(name)


def measure(tmp: Path, rows: int, token_share: float, db: str, formats: tuple[str, ...]) -> None:
    asyncio.run(fill(db, rows, token_share))
    work = tmp / f"work-{rows}"
    work.mkdir()
    results = {}
    for what in (*BASELINES, *formats):
        command = [sys.executable, __file__, "--child", db, str(work), what, str(rows)]
        results[what] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    base = {
        "partitioned-csv": "duckdb COPY csv",
        "partitioned-jsonl": "bare json",
        "partitioned-parquet": "duckdb COPY parquet",
        "csv": "duckdb COPY csv",
        "row csv": "duckdb COPY csv",
        "row jsonl": "bare json",
        "row ooni": "bare json",
        "parquet": "duckdb COPY parquet",
        "jsonl": "bare json",
        "ooni": "bare json",
    }
    for what, result in results.items():
        ratio = result["rows_per_s"] / results[base[what]]["rows_per_s"] if what in base else 1.0
        print(
            f"{what:<20} {rows:>9} {result['seconds']:>9} {result['rows_per_s']:>9} {ratio:>9.2f}"
            f" {result['output_mib']:>9} {result['peak_rss_mib']:>8}M",
            flush=True,
        )
    shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 400_000])
    parser.add_argument("--token-share", type=float, default=0.5, help="share of token-signed rows")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--formats", nargs="+", choices=(*FORMATS, *ROW_PATHS), help="default: all")
    parser.add_argument("--child", nargs=4, metavar=("DB", "WORK", "WHAT", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.child[2], int(args.child[3]))))
        return
    header = ("what", "rows", "seconds", "rows/s", "ratio", "output MiB", "peak RSS")
    print(f"{header[0]:<20} " + " ".join(f"{cell:>9}" for cell in header[1:]))
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-export-") as tmp:
        if args.store == "sqlite":
            for rows in args.rows:
                db = Path(tmp) / f"store-{rows}.db"
                measure(Path(tmp), rows, args.token_share, str(db), tuple(args.formats or FORMATS))
                db.unlink()
            return
        with _cluster_class()() as cluster:
            for rows in args.rows:
                db = asyncio.run(_new_database(cluster))
                formats = tuple(args.formats or (*ROW_PATHS, *FORMATS))
                measure(Path(tmp), rows, args.token_share, db, formats)


if __name__ == "__main__":
    main()

"""Reading the store page by page with a ``since`` filter (exports, the attribution window's start-up
rebuild), at two table sizes in the same run: the µs per row should not grow with the table.

    python bench/store_pages.py                      # 20,000 and 200,000 rows, SQLite
    python bench/store_pages.py --rows 2000 20000
    python bench/store_pages.py --postgres           # the same on a throwaway PostgreSQL cluster

For each size a fresh SQLite store is filled (one real measurement payload, 30 s apart), then every row
since the first quarter of the table is read four ways: through ``store.iterate`` (pages of 1,000 that
continue from their cursor, rows decoded), bare sqlite3 pages with the cursor as the only time bound (the
query shape now), bare pages with the shape used before (``since`` and the cursor both in the WHERE clause:
SQLite started each page's index range at ``since``), and one bare SELECT of the same rows (the floor).
Ratios are to the bare SELECT of the same size; the last lines compare µs per row across sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from gatewatch.collector.store import MeasurementFilter, StoredMeasurement, open_store
from gatewatch.collector.store.base import to_micros
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.verdicts import Verdict

START = datetime(2026, 11, 1, tzinfo=UTC)
PAGE = 1000
LABELS = {
    "bare": "one bare SELECT (baseline)",
    "iterate": "store.iterate (pages continue from the cursor)",
    "raw pages": "bare pages, the cursor as the only time bound",
    "raw pages, before": "bare pages bounded by since and cursor (before)",
}
_AFTER = "(measurement_start_time, measurement_uid) > (?, ?)"
_PG_AFTER = "(measurement_start_time, measurement_uid) > ($1, $2)"
_COLUMNS = "measurement_uid, measurement_start_time, payload, verdict_json"


def _rows(count: int) -> list[StoredMeasurement]:
    verdict = Verdict(blocking=False, accessible=True)
    payload = Measurement(
        measurement_start_time=START, test_start_time=START, test_runtime=1.0, probe_asn="AS64501",
        probe_cc="KH", input="https://example.org/", test_keys=WebTestKeys(verdict=verdict),
    ).to_json_bytes()  # fmt: skip
    template = StoredMeasurement(
        measurement_uid="", received_at=START, measurement_start_time=START, probe_cc="KH",
        probe_asn="AS64501", test_name="web", input="https://example.org/", domain="example.org",
        blocking="false", anomaly=False, technique=None, fingerprint_key=None,
        verdict_json=verdict.model_dump_json(), payload=payload,
    )  # fmt: skip
    return [
        replace(
            template,
            measurement_uid=f"{i:08d}-0000-7000-8000-000000000000",
            measurement_start_time=START + timedelta(seconds=30 * i),
            received_at=START + timedelta(seconds=30 * i + 60),
        )  # fmt: skip
        for i in range(count)
    ]


def _raw_pages(path: Path, since: datetime, *, both_bounds: bool) -> int:
    """Every row since ``since`` in pages of PAGE through bare sqlite3; ``both_bounds``: the query shape
    used before, with ``since`` and the cursor both bounding the time (else the cursor alone, as now)."""
    conn = sqlite3.connect(path)
    count, after = 0, None
    try:
        while True:
            if after is None:
                sql = f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= ?"
                params: tuple[object, ...] = (to_micros(since),)
            else:
                sql = f"SELECT {_COLUMNS} FROM measurements WHERE {_AFTER}"
                params = after
                if both_bounds:  # as filter_sql wrote it: ``since`` first, then the cursor
                    sql = (
                        f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= ? AND {_AFTER}"
                    )
                    params = (to_micros(since), *after)
            fetched = conn.execute(sql + " ORDER BY measurement_start_time, measurement_uid LIMIT ?",
                                   (*params, PAGE + 1)).fetchall()  # fmt: skip
            count += min(len(fetched), PAGE)
            if len(fetched) <= PAGE:
                return count
            after = (fetched[PAGE - 1][1], fetched[PAGE - 1][0])
    finally:
        conn.close()


def _bare(path: Path, since: datetime) -> int:
    conn = sqlite3.connect(path)
    try:
        sql = (f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= ?"
               " ORDER BY measurement_start_time, measurement_uid")  # fmt: skip
        return sum(1 for _ in conn.execute(sql, (to_micros(since),)))
    finally:
        conn.close()


async def _measure(count: int, folder: Path) -> dict[str, float]:
    path = folder / f"pages-{count}.db"
    store = await open_store(f"sqlite:///{path}")
    rows = _rows(count)
    for i in range(0, count, 2000):
        chunk = rows[i : i + 2000]
        await store.insert_many(chunk, [(b"s" * 64, b"k" * 32)] * len(chunk))
    since = START + timedelta(seconds=30 * (count // 4))
    expected = count - count // 4
    figures: dict[str, float] = {}
    await asyncio.to_thread(_bare, path, since)  # warm the page cache: every way below reads warm
    started = time.perf_counter()
    assert await asyncio.to_thread(_bare, path, since) == expected
    figures["bare"] = time.perf_counter() - started
    started = time.perf_counter()
    seen = sum([1 async for _ in store.iterate(MeasurementFilter(since=since), batch=PAGE)])
    figures["iterate"] = time.perf_counter() - started
    assert seen == expected, (seen, expected)
    for name, both in (("raw pages", False), ("raw pages, before", True)):
        started = time.perf_counter()
        assert await asyncio.to_thread(partial(_raw_pages, path, since, both_bounds=both)) == expected
        figures[name] = time.perf_counter() - started
    await store.close()
    return {name: seconds / expected * 1e6 for name, seconds in figures.items()}


async def _pg_pages(url: str, since: datetime, *, both_bounds: bool) -> int:
    """``_raw_pages`` on PostgreSQL (asyncpg, one connection)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    count, after = 0, None
    order = f" ORDER BY measurement_start_time, measurement_uid LIMIT {PAGE + 1}"
    try:
        while True:
            if after is None:
                sql = f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= $1"
                params: tuple[object, ...] = (since,)
            elif both_bounds:
                sql = (f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= $1"
                       " AND (measurement_start_time, measurement_uid) > ($2, $3)")  # fmt: skip
                params = (since, *after)
            else:
                sql = f"SELECT {_COLUMNS} FROM measurements WHERE {_PG_AFTER}"
                params = after
            fetched = await conn.fetch(sql + order, *params)
            count += min(len(fetched), PAGE)
            if len(fetched) <= PAGE:
                return count
            after = (fetched[PAGE - 1][1], fetched[PAGE - 1][0])
    finally:
        await conn.close()


async def _measure_postgres(count: int, cluster: Any) -> dict[str, float]:
    url = await cluster.new_database()
    store = await open_store(url)
    rows = _rows(count)
    for i in range(0, count, 2000):
        chunk = rows[i : i + 2000]
        await store.insert_many(chunk, [(b"s" * 64, b"k" * 32)] * len(chunk))
    since = START + timedelta(seconds=30 * (count // 4))
    expected = count - count // 4
    figures: dict[str, float] = {}
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute("VACUUM ANALYZE measurements")
    bare_sql = (f"SELECT {_COLUMNS} FROM measurements WHERE measurement_start_time >= $1"
                " ORDER BY measurement_start_time, measurement_uid")  # fmt: skip
    await conn.fetch(bare_sql, since)  # warm the buffers: every way below reads warm
    started = time.perf_counter()
    assert len(await conn.fetch(bare_sql, since)) == expected
    figures["bare"] = time.perf_counter() - started
    await conn.close()
    started = time.perf_counter()
    seen = sum([1 async for _ in store.iterate(MeasurementFilter(since=since), batch=PAGE)])
    figures["iterate"] = time.perf_counter() - started
    assert seen == expected, (seen, expected)
    for name, both in (("raw pages", False), ("raw pages, before", True)):
        started = time.perf_counter()
        assert await _pg_pages(url, since, both_bounds=both) == expected
        figures[name] = time.perf_counter() - started
    await store.close()
    return {name: seconds / expected * 1e6 for name, seconds in figures.items()}


async def _main(sizes: list[int], postgres: bool) -> None:
    if postgres:
        from ingest_scale import Cluster  # bench/ingest_scale.py: a throwaway cluster on a unix socket

        results: dict[int, dict[str, float]] = {}
        with Cluster() as cluster:
            for count in sizes:
                results[count] = await _measure_postgres(count, cluster)
        _report(sizes, results, "PostgreSQL")
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as folder:
        for count in sizes:
            results[count] = await _measure(count, Path(folder))
    _report(sizes, results, "SQLite")


def _report(sizes: list[int], results: dict[int, dict[str, float]], dialect: str) -> None:
    for count, figures in results.items():
        print(f"{dialect}, {count:,} rows (reading the last {count - count // 4:,}), µs per row:")
        for name, label in LABELS.items():
            print(f"  {label:<48} {figures[name]:8.2f}  {figures[name] / figures['bare']:.2f}x")
    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"µs per row at {sizes[-1]:,} rows / at {sizes[0]:,} rows (1.00: linear):")
    for name, label in LABELS.items():
        print(f"  {label:<48} {large[name] / small[name]:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000], help="table sizes")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster, not SQLite")
    args = parser.parse_args()
    asyncio.run(_main(args.rows, args.postgres))


if __name__ == "__main__":
    main()

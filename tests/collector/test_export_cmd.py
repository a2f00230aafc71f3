"""``export_selection`` (pages from the store, SQL-written records on SQLite) writes the same partitioned
files as ``export_partitioned`` over the same rows encoded one by one, in every format; Parquet files are
converted while later days are written, each the conversion of its partition's CSV."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from gatewatch.collector import export_parquet
from gatewatch.collector.export_cmd import PARTITION_FORMATS, export_partitioned, export_selection
from gatewatch.collector.exports import convert_to_parquet
from gatewatch.collector.store import MeasurementFilter, open_store
from gatewatch.collector.store.base import StoredMeasurement

from .test_export_rows import varied_rows


def spread_rows() -> list[StoredMeasurement]:
    """The varied rows over three days and three countries (one a code no path may hold), interleaved."""
    rows = []
    for i, row in enumerate(varied_rows()):
        start = row.measurement_start_time + timedelta(days=i % 4, hours=i)
        rows.append(replace(row, measurement_start_time=start, probe_cc=("KH", "MM", "../")[i % 3]))
    return rows


def contents(root: Path, fmt: str) -> dict[str, object]:
    """Each file's rows as a reader sees them (gzip members joined; Parquet's values)."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("measurements.*")):
        name = path.relative_to(root).as_posix()
        if fmt == "parquet":
            with duckdb.connect() as con:
                found[name] = con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
        else:
            found[name] = gzip.decompress(path.read_bytes())
    return found


def manifest_rows(root: Path) -> list[tuple[str, int]]:
    manifest = json.loads((root / "_manifest.json").read_text())
    return [(entry["path"], entry["rows"]) for entry in manifest["files"]]


@pytest.mark.parametrize("max_open", [1, 32])
@pytest.mark.parametrize("fmt", list(PARTITION_FORMATS))
async def test_pages_write_the_files_rows_do(store_url: str, tmp_path: Path, fmt: str, max_open: int) -> None:
    store = await open_store(store_url)
    rows = spread_rows()
    try:
        await store.insert_many(rows, [(b"S" * 64, b"K" * 32)] * len(rows))
        for f in (MeasurementFilter(), MeasurementFilter(probe_cc="MM")):
            by_rows, by_pages = tmp_path / f"rows-{f.probe_cc}", tmp_path / f"pages-{f.probe_cc}"
            expected = await export_partitioned(store.iterate(f, batch=4), by_rows, fmt, max_open=max_open)
            written = await export_selection(store, f, by_pages, fmt, max_open=max_open)
            assert [p.relative_to(by_pages) for p in written] == [p.relative_to(by_rows) for p in expected]
            assert len(written) > (3 if f.probe_cc else 9)
            assert contents(by_pages, fmt) == contents(by_rows, fmt)
            assert manifest_rows(by_pages) == manifest_rows(by_rows)
            assert "cc=ZZ" in str(written) or f.probe_cc  # the odd country code is withheld, not a path
    finally:
        await store.close()


def many_days_rows(days: int, per_day: int) -> list[StoredMeasurement]:
    """The varied rows copied over ``days`` days in start-time order, ``per_day`` a day (several pages
    each), two countries."""
    base = varied_rows()
    rows = []
    for day in range(days):
        for n in range(per_day):
            row = base[n % len(base)]
            start = row.measurement_start_time.replace(hour=0) + timedelta(days=day, seconds=n)
            rows.append(replace(row, measurement_start_time=start, probe_cc=("KH", "MM")[n % 2]))
    return rows


async def _aiter(rows: list[StoredMeasurement]):
    for row in rows:
        yield row


@pytest.mark.parametrize("order", ["by day", "a day again after later days"])
async def test_parquet_files_converted_during_the_export_are_the_staged_conversions(
    tmp_path: Path, order: str
) -> None:
    """Each day's Parquet files are converted while later days are written (export_parquet.ConversionQueue);
    every file is still DuckDB's conversion of its partition's CSV, also when rows of a converted day come
    again later (the store's order is by start time, but this must not depend on it)."""
    rows = many_days_rows(4, 1300)
    if order != "by day":
        rows = (
            rows[:1300] + rows[2600:3900] + rows[1300:2600] + rows[3900:] + rows[:700]
        )  # day 0 at the end too
    written = await export_partitioned(_aiter(rows), tmp_path / "parquet", "parquet")
    await export_partitioned(_aiter(rows), tmp_path / "csv", "csv")
    assert len(written) == 8
    for path in written:
        relative = path.relative_to(tmp_path / "parquet")
        staging = tmp_path / "staging.csv"
        staging.write_bytes(
            gzip.decompress((tmp_path / "csv" / relative).with_suffix(".csv.gz").read_bytes())
        )
        convert_to_parquet(staging, tmp_path / "expected.parquet")
        assert path.read_bytes() == (tmp_path / "expected.parquet").read_bytes(), relative
    assert sum(rows for _, rows in manifest_rows(tmp_path / "parquet")) == len(rows)
    assert not [p for p in (tmp_path / "parquet").rglob("*") if p.name.endswith((".partial", ".staging.csv"))]


async def test_a_failed_conversion_fails_the_export_and_leaves_no_work_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_parquet.convert_all_to_parquet

    def fails_on_the_third(pairs, *args: object) -> None:
        def first_two():
            for n, pair in enumerate(pairs):
                if n == 2:
                    raise OSError("No space left on device")
                yield pair

        real(first_two(), *args)

    out = tmp_path / "out"
    await export_partitioned(_aiter(many_days_rows(1, 10)), out, "parquet")  # a complete export before
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(export_parquet, "convert_all_to_parquet", fails_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        await export_partitioned(_aiter(many_days_rows(4, 600)), out, "parquet")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert "gatewatch-parquet-convert" not in [t.name for t in threading.enumerate()]

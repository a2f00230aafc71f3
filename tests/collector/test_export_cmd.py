"""``export_selection`` (pages from the store, SQL-written records on SQLite) writes the same partitioned
files as ``export_partitioned`` over the same rows encoded one by one, in every format."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from gatewatch.collector.export_cmd import PARTITION_FORMATS, export_partitioned, export_selection
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

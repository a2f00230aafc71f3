"""The CSV summary written by PostgreSQL's COPY (export_postgres.py) is byte for byte the row path's CSV,
page by page, on rows with every kind of value COPY's text format escapes; selections it would write
otherwise are refused (the caller takes the row path)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gatewatch.collector.export_postgres import copy_summary_page, from_copy_text, summary_copy_applies
from gatewatch.collector.export_rows import page_bytes
from gatewatch.collector.export_stream import row_partition, stream_export
from gatewatch.collector.exports import csv_header, csv_line
from gatewatch.collector.store import open_store
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.collector.store.postgres import PostgresStore

from .conftest import PostgresCluster, create_database
from .test_export_rows import token_signed, varied_rows
from .test_exports import START, collect, make_row

pytestmark = pytest.mark.postgres
ALL = MeasurementFilter()
ENVELOPE = (b"S" * 64, b"K" * 32)
# What COPY's text format escapes (backslash, BS, FF, LF, CR, TAB, VT) and what it does not (other controls).
ESCAPED = "a\\b\\\\n\bx\fy\nz\rw\tv\vu\x01\x1f\x7f\\N\\."


def copy_rows() -> list[StoredMeasurement]:
    rows = varied_rows()
    extra = [
        make_row(100 + i, input=text, start=START + timedelta(hours=1, seconds=i), flags=("a\\b", 'q"'))
        for i, text in enumerate([ESCAPED, "\\", "x" * 150_000 + "\\n\n"])
    ]
    extra.append(
        token_signed(replace(make_row(200, start=START + timedelta(hours=2)), payload=b"p" * 200_000), 3)
    )
    extra.append(replace(token_signed(make_row(201, start=START + timedelta(hours=2)), 4), signature=None))
    return rows + extra


async def filled(cluster: PostgresCluster, rows: list[StoredMeasurement]) -> PostgresStore:
    store = await open_store(await create_database(cluster))
    assert isinstance(store, PostgresStore)
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    return store


async def copied(store: PostgresStore, f: MeasurementFilter, page_rows: int) -> bytes:
    pieces, after = [csv_header()], None
    for _ in range(1000):
        page, after = await copy_summary_page(store, f, after, page_rows)
        pieces.append(page_bytes(page.lines))
        if after is None:
            return b"".join(pieces)
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize("page_rows", [1, 4, 5000])
@pytest.mark.parametrize(
    "f",
    [
        MeasurementFilter(),
        MeasurementFilter(probe_cc="MM"),
        MeasurementFilter(since=START + timedelta(minutes=2), until=START + timedelta(minutes=6)),
        MeasurementFilter(anomaly=True, blocking="dns"),
    ],
)
async def test_copy_is_the_rows_csv(
    pg_cluster: PostgresCluster, f: MeasurementFilter, page_rows: int
) -> None:
    store = await filled(pg_cluster, copy_rows())
    try:
        assert await summary_copy_applies(store, f)
        expected = csv_header() + b"".join([csv_line(row) async for row in store.iterate(f, batch=7)])
        assert expected.count(b"\r\n") > 3
        assert await copied(store, f, page_rows) == expected
    finally:
        await store.close()


@pytest.mark.parametrize("page_rows", [1, 3, 5000])
async def test_partitioned_pages_are_the_rows_records_and_partitions(
    pg_cluster: PostgresCluster, page_rows: int
) -> None:
    rows = copy_rows()
    # A country code another collector stored, escaped by COPY (never a path: export_cmd withholds it).
    rows.append(replace(make_row(300, start=START + timedelta(days=1)), probe_cc="X\tY\\"))
    store = await filled(pg_cluster, rows)
    try:
        expected = [(csv_line(row), row_partition(row)) async for row in store.iterate(ALL)]
        got, after = [], None
        for _ in range(1000):
            page, after = await copy_summary_page(store, ALL, after, page_rows, partitioned=True)
            assert page.partitions is not None
            got.extend(zip(page.lines, page.partitions, strict=True))
            if after is None:
                break
        assert got == expected
        assert "X\tY\\" in {cc for _, (_, cc) in got}
    finally:
        await store.close()


async def test_stream_export_takes_copy_with_the_same_bytes(pg_cluster: PostgresCluster) -> None:
    store = await filled(pg_cluster, copy_rows())
    try:
        expected = csv_header() + b"".join([csv_line(row) async for row in store.iterate(ALL)])
        assert await collect(stream_export(store, "csv", ALL, chunk_size=1000)) == expected
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("row", "without_it"),
    [
        # Python writes the year unpadded
        (make_row(1, start=datetime(999, 12, 31, 23, 0, tzinfo=UTC)), MeasurementFilter(since=START)),
        # json.dumps escapes it, PostgreSQL's JSON does not
        (
            make_row(1, start=START + timedelta(hours=1), flags=("ünicode",)),
            MeasurementFilter(until=START + timedelta(minutes=1)),
        ),
    ],
)
async def test_rows_copy_writes_otherwise_are_refused(
    pg_cluster: PostgresCluster, row: StoredMeasurement, without_it: MeasurementFilter
) -> None:
    store = await filled(pg_cluster, [make_row(0), row])
    try:
        assert await summary_copy_applies(store, ALL) is False
        assert await summary_copy_applies(store, without_it) is True
        # The export still writes the row path's bytes (it takes that path).
        expected = csv_header() + b"".join([csv_line(r) async for r in store.iterate(ALL)])
        assert await collect(stream_export(store, "csv", ALL)) == expected
    finally:
        await store.close()


def test_copy_text_is_undone_exactly() -> None:
    assert from_copy_text(b"a\\\\n\\nb\\tc\\r\nplain\n") == b"a\\n\nb\tc\r\r\nplain\r\n"
    assert from_copy_text(b"") == b""

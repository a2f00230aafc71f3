"""The CSV summary read as text from SQLite (export_rows.py) is byte for byte the CSV of the stored rows."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewatch.collector.export_rows import page_bytes, summary_pages, summary_sql_applies
from gatewatch.collector.exports import csv_header, csv_line
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.collector.store.sqlite import SQLiteStore
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .test_exports import ODD_INPUTS, START, make_row


def token_signed(row: StoredMeasurement, index: int) -> StoredMeasurement:
    return replace(
        row,
        signature_scheme=SCHEME_BLIND_TOKEN,
        signature=bytes([index]) * 64,
        ephemeral_key=b"\x00\xff" * 16,
        token=bytes(range(256)) + b'\n,"',
        token_epoch=2900 + index,
        token_key_id=f'key-{index},"x"',
    )


def varied_rows() -> list[StoredMeasurement]:
    """Every kind of value the summary treats apart: odd inputs, each blocking, flags (two of them: the
    stored JSON has spaces the CSV's has not), no fingerprint, token-signed rows, equal start times, a
    scheme outside the vocabulary."""
    rows: list[StoredMeasurement] = []
    # U+001F is the fast path's own separator (export_rows.py): a field holding one takes the exact path.
    for i, text in enumerate([*ODD_INPUTS, "https://example.org/\x1fsep", "https://example.org/plain"] * 3):
        blocking = ("dns", "false", "null")[i % 3]
        flags = (("asn_mismatch",), (), ("asn_mismatch", "ooni_import"))[i % 3]
        start = START + timedelta(minutes=i // 2, microseconds=999_999 * (i % 2))  # ties and sub-seconds
        row = make_row(i, input=text, cc=("KH", "MM")[i % 2], start=start, blocking=blocking, flags=flags)
        if i % 5 == 1:  # every text column is quoted alike, whatever a store holds
            odd = ODD_INPUTS[i % len(ODD_INPUTS)]
            row = replace(row, technique=odd, fingerprint_key=odd, domain=odd, probe_asn=odd, test_name=odd)
        if i % 7 == 3:  # a scheme of no vocabulary, needing quotes
            row = replace(row, signature_scheme='odd,"scheme')
        rows.append(token_signed(row, i) if i % 4 == 0 else row)
    return rows


def odd_receipts(rows: list[StoredMeasurement]) -> list[StoredMeasurement]:
    """``rows`` received before 1970 and before year 1000 (where SQLite's strftime and Python's differ;
    PostgreSQL's paths refuse such years), every other row: the SQLite paths write that hour in Python."""
    odd = (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(999, 3, 1, 12, 30, tzinfo=UTC))
    return [replace(row, received_at=odd[i % 4 // 2]) if i % 2 else row for i, row in enumerate(rows)]


async def stored(tmp_path: Path, rows: list[StoredMeasurement]) -> SQLiteStore:
    store = await SQLiteStore.open(str(tmp_path / "gatewatch.db"))
    await store.insert_many(rows, [None] * len(rows))
    return store


def sql_csv(path: Path, f: MeasurementFilter, page_rows: int) -> bytes:
    with sqlite3.connect(path) as conn:
        return csv_header() + b"".join(page_bytes(page.lines) for page in summary_pages(conn, f, page_rows))


@pytest.mark.parametrize("page_rows", [1, 4, 1000])
@pytest.mark.parametrize(
    "f",
    [
        MeasurementFilter(),
        MeasurementFilter(probe_cc="MM"),
        MeasurementFilter(since=START + timedelta(minutes=2), until=START + timedelta(minutes=6)),
        MeasurementFilter(anomaly=True, blocking="dns"),
    ],
)
async def test_sql_summary_is_the_rows_csv(tmp_path: Path, f: MeasurementFilter, page_rows: int) -> None:
    store = await stored(tmp_path, odd_receipts(varied_rows()))
    try:
        expected = csv_header() + b"".join([csv_line(row) async for row in store.iterate(f, batch=7)])
    finally:
        await store.close()
    assert expected.count(b"\r\n") > 1 or f.probe_cc  # the selection is not empty
    assert sql_csv(tmp_path / "gatewatch.db", f, page_rows) == expected


@pytest.mark.parametrize(
    "start",
    [
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # integer division would round up
        datetime(999, 1, 1, tzinfo=UTC),  # Python writes the year without zero padding
    ],
)
async def test_times_sqlite_formats_otherwise_are_refused(tmp_path: Path, start: datetime) -> None:
    store = await stored(tmp_path, [make_row(0), make_row(1, start=start)])
    await store.close()
    with sqlite3.connect(tmp_path / "gatewatch.db") as conn:
        assert summary_sql_applies(conn) is False
        conn.execute("DELETE FROM measurements WHERE measurement_start_time < 0")
        assert summary_sql_applies(conn) is True
        conn.execute("DELETE FROM measurements")
        assert summary_sql_applies(conn) is True  # nothing stored: nothing to format


async def test_pages_leave_their_temporary_table_empty(tmp_path: Path) -> None:
    """Each page goes through a temporary table (one SQLite step for the page's work): emptied after each
    page, so an export given up half-way leaves nothing behind, and the next export on the connection
    reads the same lines."""
    await (await stored(tmp_path, varied_rows())).close()
    f = MeasurementFilter()
    expected = sql_csv(tmp_path / "gatewatch.db", f, 4)
    with sqlite3.connect(tmp_path / "gatewatch.db", isolation_level=None) as conn:
        abandoned = summary_pages(conn, f, 4)
        assert next(abandoned).lines
        abandoned.close()
        listed = conn.execute("SELECT name FROM temp.sqlite_master WHERE type = 'table'").fetchall()
        assert listed
        assert [conn.execute(f"SELECT count(*) FROM temp.{name}").fetchone() for (name,) in listed] == [
            (0,)
        ] * len(listed)
        again = b"".join(page_bytes(page.lines) for page in summary_pages(conn, f, 4))
        assert csv_header() + again == expected

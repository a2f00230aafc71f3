"""JSON Lines and OONI records written from a page's columns (export_lines.py) are byte for byte the exact
path's (exports.jsonl_line, exports.ooni_line): SQLite's OONI pages, and PostgreSQL's pages for both
formats, on varied rows (odd text, every blocking, flags, token-signed rows, rich OONI shapes) and on
payloads spelt in every way json reads (escapes, spaces, numbers it re-spells, repeated keys, unknown
keys, lone surrogates); rows the splice cannot write exactly are written the exact way."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewatch.collector.export_documents import document_rows
from gatewatch.collector.export_lines import jsonl_record, ooni_record
from gatewatch.collector.export_postgres import documents_apply
from gatewatch.collector.export_rows import page_bytes
from gatewatch.collector.export_stream import row_partition, stream_export, stream_pages
from gatewatch.collector.exports import jsonl_line, ooni_line
from gatewatch.collector.store import open_store
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.collector.store.postgres import PostgresStore
from gatewatch.collector.store.sqlite import SQLiteStore

from .conftest import PostgresCluster, create_database
from .test_export_documents import EXACT_PAYLOADS, PAYLOADS
from .test_export_rows import odd_receipts, token_signed, varied_rows
from .test_exports import START, collect, make_row
from .test_ooni_format import stored as ooni_row

ALL = MeasurementFilter()
ENVELOPE = (b"S" * 64, b"K" * 32)
MARKER = "gatewatch-0123456789abcdef"
# More spellings json re-spells or reads apart: each must come out as json.dumps(json.loads(...)) writes it.
MORE_PAYLOADS = {
    "escaped unicode and controls": '{"input":"\\u00e9\\u2028\\u0000\\t\\"\\\\\\/","annotations":'
    '{"k\\u00e9y":"\\ud83d\\ude00 é 😀 \\u202e"}}',
    "numbers json re-spells": '{"test_runtime":1.50,"annotations":{"a":[1e400,-1e-7,0.1e1,-0,1E+2]}}',
    "test_keys of odd shapes": '{"test_keys":{"queries":[1,{"answers":null}],"requests":"x","control":[]}}',
    "test_keys not an object": '{"test_keys":[1,2]}',
    "the analysis marker as a value": '{"input":"' + MARKER + '","annotations":{"' + MARKER + '":1}}',
}
ODD = {
    **{name: text.encode() for name, text in {**PAYLOADS, **EXACT_PAYLOADS, **MORE_PAYLOADS}.items()},
    "a BOM": "\ufeff{}".encode(),  # json.loads reads bytes as UTF-8-SIG, UTF-16 or UTF-32 too
    "UTF-16": '{"input":"x","test_start_time":"2026-11-23T13:39:35Z"}'.encode("utf-16"),
    "UTF-32": '{"input":"y"}'.encode("utf-32-le"),
}


def odd_rows() -> list[StoredMeasurement]:
    """Rows whose payloads are spelt otherwise, plain and token-signed, besides an agent's."""
    rows = [make_row(0)]
    for i, payload in enumerate(ODD.values(), 1):
        row = replace(make_row(i, start=START + timedelta(seconds=i)), payload=payload)
        rows.append(token_signed(row, i) if i % 2 else row)
    return rows


def rich_rows() -> list[StoredMeasurement]:
    """OONI's shapes (DNS, TCP, TLS, HTTP, control), each blocking, and odd verdicts and flags."""
    rows = []
    for i, blocking in enumerate(["dns", "false", "null", "dns", "tls"]):
        row = replace(
            ooni_row("dns" if blocking == "tls" else blocking),
            measurement_uid=f"{i:08d}-0000-7000-8000-000000000001",
            measurement_start_time=START + timedelta(days=1, seconds=i),
            blocking=blocking,
        )
        rows.append(token_signed(row, i) if i % 2 else row)
    rows.append(replace(rows[0], measurement_uid="odd-verdict", verdict_json='{"note":"\\udc80 ü"}'))
    rows.append(replace(rows[1], measurement_uid="odd-flags", flags=("ünicode", 'q"\\')))
    rows.append(replace(rows[2], measurement_uid="verdict-not-object", verdict_json="[1]"))
    return rows


def every_row() -> list[StoredMeasurement]:
    return [*varied_rows(), *odd_rows(), *rich_rows()]


def usable(rows: list[StoredMeasurement], exact: object) -> list[StoredMeasurement]:
    """The rows the exact path writes (a payload that is no object fails it: tested apart)."""
    kept = []
    for row in rows:
        try:
            exact(row)  # type: ignore[operator]
        except (AttributeError, TypeError, ValueError):
            continue
        kept.append(row)
    return kept


async def sqlite_store(path: Path, rows: list[StoredMeasurement]) -> list[StoredMeasurement]:
    store = await SQLiteStore.open(str(path))
    try:
        await store.insert_many(rows, [None] * len(rows))
        return [row async for row in store.iterate(ALL, batch=3)]
    finally:
        await store.close()


@pytest.mark.parametrize("page_rows", [1, 4, 2000])
async def test_sqlite_ooni_pages_are_the_exact_paths_bytes(tmp_path: Path, page_rows: int) -> None:
    """Pages of columns (partitions as the row's), odd rows left to the exact way, odd receipt times
    written as Python writes them."""
    path = tmp_path / "gatewatch.db"
    rows = await sqlite_store(path, usable(odd_receipts(every_row()), ooni_line))
    expected = [(ooni_line(row), row_partition(row)) for row in rows]
    assert len(expected) > 40
    with sqlite3.connect(path) as conn:
        got: list[tuple[bytes | None, tuple[str, str]]] = []
        for page, partitions in document_rows(conn, ALL, page_rows, partitioned=True):
            assert partitions is not None
            got.extend(zip([ooni_record(row, MARKER) for row in page], partitions, strict=True))
    exact = [(line or ooni_line(row), partition) for row, (line, partition) in zip(rows, got, strict=True)]
    assert exact == expected
    assert sum(line is None for line, _ in got) <= 3  # the splice writes nearly all of them


async def test_sqlite_stream_export_ooni_takes_the_pages(tmp_path: Path) -> None:
    """Several pages (the pool's way where there are cores), and a filter."""
    path = tmp_path / "gatewatch.db"
    many = [make_row(i, start=START + timedelta(days=2, seconds=i // 3)) for i in range(4500)]
    await sqlite_store(path, [*usable(every_row(), ooni_line), *many])
    store = await SQLiteStore.open(str(path))
    try:
        expected = b"".join([ooni_line(row) async for row in store.iterate(ALL)])
        assert await collect(stream_export(store, "ooni", ALL, chunk_size=999)) == expected
        f = MeasurementFilter(probe_cc="MM")
        expected = b"".join([ooni_line(row) async for row in store.iterate(f)])
        assert expected and await collect(stream_export(store, "ooni", f)) == expected
    finally:
        await store.close()


def columns(row: StoredMeasurement) -> tuple[object, ...]:
    """A row as export_lines.DOCUMENT_COLUMNS, as the stores' SQL writes it."""
    import json

    utc = row.measurement_start_time.astimezone(UTC)
    return (
        row.payload,
        row.measurement_uid,
        row.input,
        row.probe_cc,
        row.probe_asn,
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        utc.strftime("%Y%m%dT%H%M%SZ"),
        row.blocking,
        row.anomaly,
        row.technique,
        row.fingerprint_key,
        row.verdict_json,
        row.received_at.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00Z"),
        json.dumps(list(row.flags)),
        row.signature_scheme,
        row.signature,
        row.ephemeral_key,
        row.token,
        row.token_epoch,
        row.token_key_id,
    )


def test_records_are_exact_or_none() -> None:
    """Every record written is the exact path's; None only where the exact path writes otherwise."""
    written = {"jsonl": 0, "ooni": 0}
    for row in every_row():
        for fmt, record, exact in (
            ("jsonl", jsonl_record(columns(row)), jsonl_line),
            ("ooni", ooni_record(columns(row), MARKER), ooni_line),
        ):
            if record is not None:
                assert record == exact(row)
                written[fmt] += 1
    assert written["jsonl"] > 40 and written["ooni"] > 40
    # What the splice leaves to the exact path: no object, no UTF-8 form, or the marker in the payload.
    assert jsonl_record(columns(replace(make_row(0), payload=b"[1]"))) is None
    surrogate = replace(make_row(0), payload=PAYLOADS["a lone surrogate"].encode())
    assert jsonl_record(columns(surrogate)) is None and ooni_record(columns(surrogate), MARKER) is None
    marked = replace(make_row(0), payload=MORE_PAYLOADS["the analysis marker as a value"].encode())
    assert ooni_record(columns(marked), MARKER) is None
    assert ooni_record(columns(marked), MARKER + "0") == ooni_line(marked)


# PostgreSQL (a throwaway cluster, as tests/collector/test_export_postgres.py).


async def pg_filled(cluster: PostgresCluster, rows: list[StoredMeasurement]) -> PostgresStore:
    store = await open_store(await create_database(cluster))
    assert isinstance(store, PostgresStore)
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    return store


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["jsonl", "ooni"])
async def test_postgres_records_are_the_row_paths_bytes(pg_cluster: PostgresCluster, fmt: str) -> None:
    exact = jsonl_line if fmt == "jsonl" else ooni_line
    rows = usable(every_row(), exact)
    store = await pg_filled(pg_cluster, rows)
    try:
        assert await documents_apply(store, ALL)  # the columns' path, non-ASCII flags and all
        for f in (ALL, MeasurementFilter(probe_cc="MM"), MeasurementFilter(since=START + timedelta(days=1))):
            expected = b"".join([exact(row) async for row in store.iterate(f, batch=7)])
            assert expected.count(b"\n") > 3
            assert await collect(stream_export(store, fmt, f, chunk_size=1000)) == expected
        expected_pages = [(exact(row), row_partition(row)) async for row in store.iterate(ALL)]
        got = []
        async for page in stream_pages(store, fmt, ALL):
            assert page.partitions is not None
            got.extend(zip(page.lines, page.partitions, strict=True))
        assert got == expected_pages
        assert page_bytes([line for line, _ in got]) == b"".join(line for line, _ in expected_pages)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_many_pages_and_years_to_char_writes_otherwise(pg_cluster: PostgresCluster) -> None:
    """More rows than a page (the keyset goes on past ties); a year below 1000 takes the row path."""
    rows = [make_row(i, start=START + timedelta(seconds=i // 3)) for i in range(4500)]
    store = await pg_filled(pg_cluster, rows)
    try:
        expected = b"".join([jsonl_line(row) async for row in store.iterate(ALL)])
        assert await collect(stream_export(store, "jsonl", ALL)) == expected
        assert await documents_apply(store, ALL)
        await store.insert_many([make_row(9999, start=datetime(999, 1, 1, tzinfo=UTC))], [ENVELOPE])
        assert not await documents_apply(store, ALL)
        expected = b"".join([ooni_line(row) async for row in store.iterate(ALL)])
        assert await collect(stream_export(store, "ooni", ALL)) == expected
    finally:
        await store.close()

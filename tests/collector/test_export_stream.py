"""API exports produced on a worker thread (export_stream.py): the same bytes as the row-by-row exporters,
off the event loop, stopped and cleaned up when the client goes away, failing when the store fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gatewatch.collector import export_stream
from gatewatch.collector.export_rows import SqlPages
from gatewatch.collector.export_stream import stream_export
from gatewatch.collector.exports import export
from gatewatch.collector.store import MeasurementFilter, StoreError, open_store
from gatewatch.collector.store.base import Store

from .test_export_rows import varied_rows
from .test_exports import collect, make_row, rows_of

ALL = MeasurementFilter()
ENVELOPE = (b"S" * 64, b"K" * 32)  # the long-term signature and key, kept apart and never exported


async def filled(url: str) -> Store:
    store = await open_store(url)
    rows = varied_rows()
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    return store


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "ooni"])
async def test_same_bytes_as_the_row_exporters(store_url: str, fmt: str) -> None:
    store = await filled(store_url)
    try:
        expected = await collect(export(fmt, store.iterate(ALL)))
        assert await collect(stream_export(store, fmt, ALL, chunk_size=1000)) == expected
        cc = MeasurementFilter(probe_cc="MM")
        assert await collect(stream_export(store, fmt, cc)) == await collect(export(fmt, store.iterate(cc)))
    finally:
        await store.close()


async def test_parquet_holds_the_rows_values(store_url: str, tmp_path: Path) -> None:
    store = await filled(store_url)
    try:
        (tmp_path / "thread.parquet").write_bytes(await collect(stream_export(store, "parquet", ALL)))
        (tmp_path / "rows.parquet").write_bytes(await collect(export("parquet", store.iterate(ALL))))
    finally:
        await store.close()
    with duckdb.connect() as con:
        read = "SELECT * FROM read_parquet('{}')"
        assert (
            con.execute(read.format(tmp_path / "thread.parquet")).fetchall()
            == con.execute(read.format(tmp_path / "rows.parquet")).fetchall()
        )


async def test_rows_are_encoded_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[str] = set()
    real = export_stream.page_bytes

    def spy(*args: object) -> bytes:  # type: ignore[no-untyped-def]
        seen.add(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(export_stream, "page_bytes", spy)
    store = await filled(f"sqlite:///{tmp_path / 'gatewatch.db'}")
    try:
        for fmt in ("csv", "jsonl", "ooni"):
            assert await collect(stream_export(store, fmt, ALL))
    finally:
        await store.close()
    assert seen == {"gatewatch-export"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_sqlite_pages_are_read_and_written_on_two_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """SQLite's SELECT on the store's reader thread, the records written on the export's own, so that
    the two overlap; the odd row's exact record is read on the reader thread too."""
    sql = export_stream._SQL_PAGES[fmt]()
    seen: dict[str, set[str]] = {"read": set(), "write": set(), "exact": set()}

    def noted(step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            seen[step].add(threading.current_thread().name.split("_")[0])
            return call(*args)

        return run

    spied = SqlPages(noted("read", sql.read), noted("write", sql.write), noted("exact", sql.exact))
    monkeypatch.setitem(export_stream._SQL_PAGES, fmt, lambda: spied)
    store = await filled(f"sqlite:///{tmp_path / 'gatewatch.db'}")
    try:
        assert await collect(stream_export(store, fmt, ALL)) == await collect(export(fmt, store.iterate(ALL)))
    finally:
        await store.close()
    reader = {"gatewatch-sqlite-reader"}
    assert seen["read"] == reader and seen["write"] == {"gatewatch-export"}
    assert seen["exact"] == (reader if fmt == "csv" else set())  # varied_rows' odd CSV fields; JSON has none


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_an_abandoned_export_stops_and_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gatewatch.db'}")
    rows = [make_row(i, input=f"https://example.org/{i}/" + "p" * 2000) for i in range(3000)]
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    staging = tmp_path / "staging"
    staging.mkdir()
    try:
        stream = stream_export(store, fmt, ALL, chunk_size=4096, tmp_dir=staging)
        assert len(await anext(stream)) > 0
        await stream.aclose()
        assert not [t for t in threading.enumerate() if t.name == "gatewatch-export"]
        assert list(staging.iterdir()) == []
    finally:
        await store.close()


async def test_a_store_that_closes_fails_the_export(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gatewatch.db'}")
    rows = [make_row(i, input=f"https://example.org/{i}/" + "p" * 2000) for i in range(3000)]
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    stream = stream_export(store, "csv", ALL, chunk_size=1024)
    assert await anext(stream)
    await store.close()
    with pytest.raises(StoreError):
        async for _ in stream:
            pass


async def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xlsx"):
        await anext(stream_export(None, "xlsx", ALL))  # type: ignore[arg-type]


async def test_an_empty_store_exports_the_empty_forms(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gatewatch.db'}")
    try:
        for fmt in ("jsonl", "csv", "ooni"):
            assert await collect(stream_export(store, fmt, ALL)) == await collect(export(fmt, rows_of([])))
    finally:
        await store.close()

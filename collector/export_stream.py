"""An export produced on a worker thread and streamed to its consumer through a bounded queue.

The API runs this in a child process of its own (export_process.py: the GIL stays with ingest). Wherever
it runs, the event loop only relays chunks: reading, encoding and (for Parquet) the DuckDB conversion all
happen off it. Pages are read through the store (its reader thread for SQLite, its pool for PostgreSQL),
so a store that closes or fails mid-way fails the export. For SQLite the CSV/Parquet summary and JSON
Lines are read as ready-made text (:mod:`.export_rows`, :mod:`.export_documents`), for PostgreSQL the
summary by COPY (:mod:`.export_postgres`); OONI records (both stores) and PostgreSQL's JSON Lines are
written from pages of columns (:mod:`.export_lines`); every other case (times the store formats
otherwise) encodes :class:`StoredMeasurement` pages with the functions of :mod:`.exports`, whose bytes
the fast paths reproduce (tested).

Memory is bounded by one page being encoded plus ``QUEUE_CHUNKS`` chunks waiting for a slow client;
when the client goes away the thread stops at its next chunk and the staging files are removed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Final, TypeVar

from .export_documents import document_rows, jsonl_sql
from .export_lines import jsonl_record, ooni_record
from .export_parquet import parquet_pipe, pipes_supported
from .export_postgres import copy_summary_page, document_page, documents_apply, summary_copy_applies
from .export_rows import PAGE_ROWS, SUMMARY_SQL, Page, SqlPages, page_bytes, summary_sql_applies
from .exports import CHUNK_SIZE, convert_to_parquet, csv_header, csv_line, jsonl_line, ooni_line
from .store.base import MeasurementFilter, Store, StoredMeasurement
from .store.postgres import PostgresStore
from .store.sqlite import SQLiteStore, stored_row

__all__ = ["QUEUE_CHUNKS", "row_partition", "stream_export", "stream_pages"]

QUEUE_CHUNKS: Final = 4  # chunks the worker may be ahead of the client
_LINE_ROWS: Final = 500  # StoredMeasurement rows per page (JSON Lines pages are a few MB)
_T = TypeVar("_T")
_LINE_ENCODERS: dict[str, Callable[[StoredMeasurement], bytes]] = {
    "jsonl": jsonl_line,
    "ooni": ooni_line,
    "csv": csv_line,
    "parquet": csv_line,  # staged as CSV
}


class _Abandoned(Exception):
    """The client went away: the worker stops."""


class _End:
    pass


class _Bridge:
    """The worker thread's side: hand chunks to the loop (blocking while the queue is full) and run the
    store's coroutines on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self.loop = loop
        self.queue = queue
        self.slots = threading.Semaphore(QUEUE_CHUNKS)
        self.stopped = threading.Event()

    def put(self, item: object) -> None:
        while not self.slots.acquire(timeout=0.1):
            if self.stopped.is_set():
                raise _Abandoned
        if self.stopped.is_set():
            raise _Abandoned
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def send(self, data: bytes, chunk_size: int) -> None:
        view = memoryview(data)
        for start in range(0, len(view), chunk_size):
            self.put(bytes(view[start : start + chunk_size]))

    def submit(self, coroutine: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def wait(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.submit(coroutine).result()


def _stored_pages(bridge: _Bridge, store: Store, f: MeasurementFilter) -> Iterator[list[StoredMeasurement]]:
    """Pages of stored rows; the next is read while the caller encodes this one."""
    reading = bridge.submit(store.page(f, None, _LINE_ROWS))
    while True:
        rows, cursor = reading.result()
        if cursor is not None:
            reading = bridge.submit(store.page(f, cursor, _LINE_ROWS))
        if rows:
            yield rows
        if cursor is None:
            return


_SQL_PAGES: dict[str, Callable[[], SqlPages]] = {
    "csv": lambda: SUMMARY_SQL,
    "parquet": lambda: SUMMARY_SQL,  # staged as CSV
    "jsonl": jsonl_sql,
}


def _sqlite_read(
    bridge: _Bridge, store: SQLiteStore, make: Callable[[sqlite3.Connection], Iterator[_T]]
) -> Iterator[_T]:
    """What ``make``'s iterator gives, each item made on the store's reader thread; the next is read
    (sqlite3 releases the GIL while SQLite works) while the caller uses this one."""
    items: Iterator[_T] | None = None

    def next_item(conn: sqlite3.Connection) -> _T | None:
        nonlocal items
        if items is None:
            items = make(conn)
        return next(items, None)

    reading = bridge.submit(store.read(next_item))
    while (item := reading.result()) is not None:
        reading = bridge.submit(store.read(next_item))
        yield item


def _sqlite_pages(
    bridge: _Bridge, store: SQLiteStore, fmt: str, f: MeasurementFilter, partitioned: bool
) -> Iterator[Page] | None:
    """The records page by page from SQL (export_rows.py, export_documents.py), or None where SQLite's
    time formatting would differ from Python's. Rows are read on the store's reader thread and written
    into records here, on the export's thread, while the next page is read."""
    if fmt not in _SQL_PAGES or not bridge.wait(store.read(summary_sql_applies)):
        return None
    sql = _SQL_PAGES[fmt]()
    raw = _sqlite_read(bridge, store, lambda conn: sql.read(conn, f, PAGE_ROWS, partitioned))

    def exact(uids: list[str]) -> dict[str, str]:
        return bridge.wait(store.read(lambda conn: sql.exact(conn, uids)))

    return (Page(sql.write(rows, exact), partitions) for rows, partitions in raw)


def _postgres_pages(
    bridge: _Bridge, store: PostgresStore, f: MeasurementFilter, partitioned: bool
) -> Iterator[Page] | None:
    """The CSV records a COPY page at a time (export_postgres.py), or None where COPY's text would differ
    from the row path's. The next page is copied while this one is written."""
    if not bridge.wait(summary_copy_applies(store, f)):
        return None

    def generate() -> Iterator[Page]:
        reading = bridge.submit(copy_summary_page(store, f, None, partitioned=partitioned))
        while True:
            page, after = reading.result()
            if after is not None:
                reading = bridge.submit(copy_summary_page(store, f, after, partitioned=partitioned))
            if page.lines:
                yield page
            if after is None:
                return

    return generate()


_RowPage = tuple[list[Any], list[tuple[str, str]] | None]  # rows of columns, and their partitions


def _postgres_rows(
    bridge: _Bridge, store: PostgresStore, f: MeasurementFilter, partitioned: bool
) -> Iterator[_RowPage]:
    """Pages of export_lines.DOCUMENT_COLUMNS (export_postgres.py); the next is read while this one is
    encoded."""
    reading = bridge.submit(document_page(store, f, None, partitioned=partitioned))
    while True:
        rows, after = reading.result()
        if after is not None:
            reading = bridge.submit(document_page(store, f, after, partitioned=partitioned))
        if rows:
            yield rows, [(row[-4], row[-3]) for row in rows] if partitioned else None
        if after is None:
            return


_DOCUMENT_RECORDS: dict[str, Callable[[Sequence[Any], str], bytes | None]] = {
    "jsonl": lambda row, _marker: jsonl_record(row),
    "ooni": ooni_record,
}


def _document_pages(
    bridge: _Bridge, store: Store, fmt: str, f: MeasurementFilter, partitioned: bool
) -> Iterator[Page] | None:
    """JSON Lines or OONI records written from pages of columns (export_lines.py), or None where the
    store's time formatting would differ from Python's. The odd row export_lines leaves is read again
    and written the exact way. (Encoding pages in worker processes did not pay on two shared cores:
    bench/export.py, 200,000 rows, OONI 32-45k rows/s with a pool of two against 41-45k without.)"""
    raw: Iterator[_RowPage]
    exact_rows: Callable[[list[str]], dict[str, StoredMeasurement]]
    if isinstance(store, SQLiteStore):
        if not bridge.wait(store.read(summary_sql_applies)):
            return None
        raw = _sqlite_read(
            bridge, store, lambda conn: document_rows(conn, f, PAGE_ROWS, partitioned=partitioned)
        )
        exact_rows = lambda uids: bridge.wait(  # noqa: E731
            store.read(lambda conn: {uid: stored_row(conn, uid) for uid in uids})
        )
    elif isinstance(store, PostgresStore):
        if not bridge.wait(documents_apply(store, f)):
            return None
        raw = _postgres_rows(bridge, store, f, partitioned)
        exact_rows = lambda uids: bridge.wait(store.export_rows(uids))  # noqa: E731
    else:
        return None
    record, exact = _DOCUMENT_RECORDS[fmt], _LINE_ENCODERS[fmt]
    marker = "gatewatch-" + uuid.uuid4().hex  # stands for analysis in an OONI record: no payload guesses it

    def generate() -> Iterator[Page]:
        for rows, partitions in raw:
            lines = [record(row, marker) for row in rows]
            missing = [row[-1] for row, line in zip(rows, lines, strict=True) if line is None]
            if missing:
                stored = exact_rows(missing)
                pairs = zip(rows, lines, strict=True)
                lines = [exact(stored[row[-1]]) if line is None else line for row, line in pairs]
            yield Page(lines, partitions)  # type: ignore[arg-type]

    return generate()


def row_partition(row: StoredMeasurement) -> tuple[str, str]:
    """The row's (UTC day ``YYYY-MM-DD``, country), as the SQL pages give it."""
    return row.measurement_start_time.astimezone(UTC).strftime("%Y-%m-%d"), row.probe_cc


def _pages(
    bridge: _Bridge, store: Store, fmt: str, f: MeasurementFilter, partitioned: bool
) -> Iterator[Page]:
    if isinstance(store, SQLiteStore):
        from_sql = _sqlite_pages(bridge, store, fmt, f, partitioned)
        if from_sql is not None:
            return from_sql
    if isinstance(store, PostgresStore) and fmt in ("csv", "parquet"):
        from_copy = _postgres_pages(bridge, store, f, partitioned)
        if from_copy is not None:
            return from_copy
    if fmt == "ooni" or (fmt == "jsonl" and isinstance(store, PostgresStore)):
        from_columns = _document_pages(bridge, store, fmt, f, partitioned)
        if from_columns is not None:
            return from_columns
    encode = _LINE_ENCODERS[fmt]
    return (
        Page(list(map(encode, rows)), list(map(row_partition, rows)) if partitioned else None)
        for rows in _stored_pages(bridge, store, f)
    )


def _encoded_pages(bridge: _Bridge, store: Store, fmt: str, f: MeasurementFilter) -> Iterator[bytes]:
    return (page_bytes(page.lines) for page in _pages(bridge, store, fmt, f, False))


def _produce(
    bridge: _Bridge, store: Store, fmt: str, f: MeasurementFilter, chunk_size: int, tmp_dir: Path | None
) -> None:
    if fmt != "parquet":
        if fmt == "csv":
            bridge.put(csv_header())
        for data in _encoded_pages(bridge, store, fmt, f):
            bridge.send(data, chunk_size)
        return
    workdir = Path(tempfile.mkdtemp(prefix="gatewatch-export-", dir=tmp_dir))
    try:
        target = workdir / "measurements.parquet"
        if pipes_supported():  # DuckDB converts while the records are written (export_parquet.py)
            with parquet_pipe(workdir, target) as out:
                out.write(csv_header())
                for data in _encoded_pages(bridge, store, fmt, f):
                    out.write(data)
        else:
            staging = workdir / "rows.csv"
            with staging.open("wb") as out:
                out.write(csv_header())
                for data in _encoded_pages(bridge, store, fmt, f):
                    out.write(data)
            convert_to_parquet(staging, target)
            staging.unlink()
        with target.open("rb") as source:
            while chunk := source.read(chunk_size):
                bridge.put(chunk)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(bridge: _Bridge, produce: Callable[[], None]) -> None:
    try:
        produce()
        bridge.put(_End())
    except _Abandoned:
        return
    except BaseException as exc:  # handed to the response, which cuts the download (or answers 503)
        try:
            bridge.put(exc)
        except (_Abandoned, RuntimeError):  # RuntimeError: the loop is closed
            return


async def _relay(produce: Callable[[_Bridge], None]) -> AsyncIterator[Any]:
    """What ``produce`` puts on its bridge, from a worker thread, until it returns."""
    loop = asyncio.get_running_loop()
    bridge = _Bridge(loop, asyncio.Queue())
    worker = threading.Thread(
        target=_run, args=(bridge, lambda: produce(bridge)), name="gatewatch-export", daemon=True
    )
    worker.start()
    try:
        while True:
            item = await bridge.queue.get()
            bridge.slots.release()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        bridge.stopped.set()
        # The worker notices within 0.1 s (or after its current page); then its staging files are gone.
        await asyncio.to_thread(worker.join, 30)


async def stream_export(
    store: Store,
    fmt: str,
    f: MeasurementFilter,
    *,
    chunk_size: int = CHUNK_SIZE,
    tmp_dir: Path | None = None,
) -> AsyncIterator[bytes]:
    """The selection in ``fmt`` (one of ``exports.EXPORT_FORMATS``), produced on a worker thread."""
    if fmt not in _LINE_ENCODERS:
        raise ValueError(f"unknown export format {fmt!r}")
    relay = _relay(lambda bridge: _produce(bridge, store, fmt, f, chunk_size, tmp_dir))
    try:
        async for chunk in relay:
            yield chunk
    finally:
        await relay.aclose()


async def stream_pages(
    store: Store, fmt: str, f: MeasurementFilter, *, partitioned: bool = True
) -> AsyncIterator[Page]:
    """The selection's records in ``fmt`` a page at a time (Parquet: its CSV staging records), read and
    encoded on a worker thread, the fast way where the store has one: for ``gatewatch-collector export``."""
    if fmt not in _LINE_ENCODERS:
        raise ValueError(f"unknown export format {fmt!r}")

    def produce(bridge: _Bridge) -> None:
        for page in _pages(bridge, store, fmt, f, partitioned):
            bridge.put(page)

    relay = _relay(produce)
    try:
        async for page in relay:
            yield page
    finally:
        await relay.aclose()

"""The embedded store: one SQLite file in WAL mode.

sqlite3 blocks, so every call runs on a worker thread that owns its connection (one writer, one reader:
WAL lets the reader see committed rows while a write is under way). ``synchronous=FULL`` makes each
commit durable before :meth:`SQLiteStore.insert_many` returns, which is what lets the collector
acknowledge a measurement: a kill -9 (or power loss) afterwards cannot lose it. Batches that arrive while
a commit is under way are committed together, each in its own savepoint (sqlite_group_commit.py).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from . import sqlite_tokens
from .base import (
    BatchOutcome,
    IssuerKeyRecord,
    MeasurementFilter,
    StoredMeasurement,
    StoreError,
    TokenSpend,
    decode_cursor,
    encode_cursor,
    filter_sql,
    from_micros,
    iterate_pages,
    to_micros,
)
from .migrations import SQLITE
from .sqlite_group_commit import GroupCommit
from .verdict_codec import decode_verdict, encode_verdict

__all__ = ["SQLiteStore", "page_sql", "stored_row"]

_T = TypeVar("_T")

_OWN_COLUMNS = (
    "measurement_uid, received_at, measurement_start_time, probe_cc, probe_asn, test_name, input, domain, "
    "blocking, anomaly, technique, fingerprint_key, verdict_json, payload, flags, signature_scheme, "
    "signature, ephemeral_key, token, token_epoch, token_key_id"
)
_INSERT = (
    f"INSERT INTO measurements ({_OWN_COLUMNS}, token_ref) VALUES ({', '.join(['?'] * 22)}) "
    "ON CONFLICT (measurement_uid) DO NOTHING"
)
# A token-signed row's token, ephemeral key, epoch and key id are kept once per batch (migration 4,
# sqlite_tokens.batch_token_ref); rows stored before hold them inline.
# Every read of a row is FROM ROWS, these four columns through TOKEN_COLUMNS (export_rows.py too).
TOKEN_COLUMNS: Final = {
    "ephemeral_key": "coalesce(ephemeral_key, batch_ephemeral_key)",
    "token": "coalesce(token, batch_token)",
    "token_epoch": "coalesce(token_epoch, batch_epoch)",
    "token_key_id": "coalesce(token_key_id, batch_key_id)",
}
ROWS: Final = "measurements LEFT JOIN batch_tokens USING (token_ref)"
_COLUMNS = _OWN_COLUMNS.replace(", ".join(TOKEN_COLUMNS), ", ".join(TOKEN_COLUMNS.values()))
_FROM = ROWS
_BUSY_TIMEOUT = 30.0  # seconds a connection waits for another's write lock
_INSERT_ENVELOPE = "INSERT INTO envelopes (measurement_uid, signature, public_key) VALUES (?, ?, ?)"


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL does not wait on the busy handler: when several connections (or
    # collectors) open a fresh database at once, the losers get "database is locked" and must retry.
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write below opens its own BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT)
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _row_values(row: StoredMeasurement, token_ref: int | None = None) -> tuple[Any, ...]:
    """The row's columns in _INSERT's order; with ``token_ref`` its token's four columns are left empty
    (the batch's row in ``batch_tokens`` holds them)."""
    inline = token_ref is None
    return (
        row.measurement_uid,
        to_micros(row.received_at),
        to_micros(row.measurement_start_time),
        row.probe_cc,
        row.probe_asn,
        row.test_name,
        row.input,
        row.domain,
        row.blocking,
        int(row.anomaly),
        row.technique,
        row.fingerprint_key,
        encode_verdict(row.verdict_json),
        row.payload,
        json.dumps(list(row.flags)) if row.flags else _NO_FLAGS,
        row.signature_scheme,
        row.signature,
        row.ephemeral_key if inline else None,
        row.token if inline else None,
        row.token_epoch if inline else None,
        row.token_key_id if inline else None,
        token_ref,
    )


def _blob(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


_NO_FLAGS = "[]"  # what _row_values stores for a measurement without flags (most of them)


def _from_row(values: tuple[Any, ...]) -> StoredMeasurement:
    return StoredMeasurement(
        measurement_uid=values[0],
        received_at=from_micros(values[1]),
        measurement_start_time=from_micros(values[2]),
        probe_cc=values[3],
        probe_asn=values[4],
        test_name=values[5],
        input=values[6],
        domain=values[7],
        blocking=values[8],
        anomaly=bool(values[9]),
        technique=values[10],
        fingerprint_key=values[11],
        verdict_json=decode_verdict(values[12]),
        payload=bytes(values[13]),
        flags=() if values[14] == _NO_FLAGS else tuple(json.loads(values[14])),
        signature_scheme=values[15],
        signature=_blob(values[16]),
        ephemeral_key=_blob(values[17]),
        token=_blob(values[18]),
        token_epoch=values[19],
        token_key_id=values[20],
    )


def stored_row(conn: sqlite3.Connection, uid: str) -> StoredMeasurement:
    """The stored row ``uid`` read on ``conn``: for the exports that write most rows from SQL
    (collector/export_rows.py, export_documents.py) and the odd one the exact way."""
    values = conn.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE measurement_uid = ?", (uid,)).fetchone()
    if values is None:
        raise LookupError(f"no stored measurement {uid!r}")
    return _from_row(values)


class _Worker:
    """One thread and the connection it alone uses (sqlite3 connections are not shared across threads)."""

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:  # called on the worker thread only
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self._path)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(self.connection()))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except RuntimeError as exc:  # the executor was shut down: the store is closed
            raise StoreError(str(exc)) from exc

    def _close_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection)
        except RuntimeError:
            return  # already shut down
        await asyncio.to_thread(self._executor.shutdown, True)


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)"
    )
    for version, statements in SQLITE:
        # Re-read the version inside the write lock: two collectors starting together must not both apply.
        conn.execute("BEGIN IMMEDIATE")
        try:
            (current,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            if current < version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s', 'now'))",
                    (version,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    (current,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(current)


@dataclass(frozen=True)
class _Batch:
    rows: Sequence[StoredMeasurement]
    envelopes: Sequence[tuple[bytes, bytes] | None]
    spend: TokenSpend | None


def _write_batch(conn: sqlite3.Connection, batch: _Batch) -> BatchOutcome:
    """One batch's rows, envelopes and token, in the caller's transaction (a savepoint of a group)."""
    replayed = sqlite_tokens.spend(conn, batch.spend) if batch.spend is not None else False
    refs: dict[tuple[object, ...], int] = {}
    inserted: list[bool] = []
    for row, envelope in zip(batch.rows, batch.envelopes, strict=True):
        row_values = _row_values(row, sqlite_tokens.batch_token_ref(conn, row, refs))
        new = conn.execute(_INSERT, row_values).rowcount == 1
        if new and envelope is not None:
            conn.execute(_INSERT_ENVELOPE, (row_values[0], *envelope))
        inserted.append(new)
    return BatchOutcome(inserted, replayed)


def page_sql(f: MeasurementFilter, after: tuple[datetime, str] | None) -> tuple[str, list[object]]:
    """One page's query (its last parameter, the row limit, is left to the caller) and its parameters."""
    where, params = filter_sql(f, lambda _n: "?", to_micros, after)
    return (
        f"SELECT {_COLUMNS} FROM {_FROM}{where} ORDER BY measurement_start_time, measurement_uid LIMIT ?",
        params,
    )


class SQLiteStore:
    """See :class:`~.base.Store`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = _Worker(path, "gatewatch-sqlite-writer")
        self._reader = _Worker(path, "gatewatch-sqlite-reader")
        self._group_commit: GroupCommit[_Batch, BatchOutcome] = GroupCommit(self._writer.run, _write_batch)
        self.schema_version = 0

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        store = cls(path)
        try:
            store.schema_version = await store._writer.run(_migrate)
        except BaseException:
            await store.close()
            raise
        return store

    async def insert_many(
        self, rows: Sequence[StoredMeasurement], envelopes: Sequence[tuple[bytes, bytes] | None]
    ) -> list[bool]:
        return (await self.insert_batch(rows, envelopes, None)).inserted

    async def insert_batch(
        self,
        rows: Sequence[StoredMeasurement],
        envelopes: Sequence[tuple[bytes, bytes] | None],
        spend: TokenSpend | None,
    ) -> BatchOutcome:
        if len(rows) != len(envelopes):
            raise ValueError("one envelope per row")

        if not rows and spend is None:
            return BatchOutcome([])
        return await self._group_commit.write(_Batch(rows, envelopes, spend))

    async def issuer_keys(self) -> list[IssuerKeyRecord]:
        return await self._reader.run(sqlite_tokens.issuer_keys)

    async def add_issuer_key(self, record: IssuerKeyRecord) -> IssuerKeyRecord:
        return await self._writer.run(lambda conn: sqlite_tokens.add_issuer_key(conn, record))

    async def retire_issuer_keys(self, before_epoch: int) -> int:
        return await self._writer.run(lambda conn: sqlite_tokens.retire_issuer_keys(conn, before_epoch))

    async def charge_tokens(
        self, key_hash: bytes, epoch: int, count: int, quota: int, nonce: bytes, enrol: bool, now: datetime
    ) -> int:
        return await self._writer.run(
            lambda conn: sqlite_tokens.charge_tokens(
                conn, key_hash, epoch, count, quota, nonce, enrol, to_micros(now)
            )
        )

    async def stored_payloads(self, uids: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(uids))
        if not unique:
            return {}

        def select(conn: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(unique), 500):  # under SQLite's limit of bound parameters
                part = unique[start : start + 500]
                marks = ", ".join("?" * len(part))
                sql = f"SELECT measurement_uid, payload FROM measurements WHERE measurement_uid IN ({marks})"
                found.update((uid, bytes(payload)) for uid, payload in conn.execute(sql, part))
            return found

        # The writer's connection: it has just committed the rows the caller compares against.
        return await self._writer.run(select)

    async def page(
        self, f: MeasurementFilter, cursor: str | None, limit: int
    ) -> tuple[list[StoredMeasurement], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = decode_cursor(cursor) if cursor is not None else None
        sql, params = page_sql(f, after)
        # One row more than asked tells whether another page exists, without a second query.

        def read(conn: sqlite3.Connection) -> tuple[list[StoredMeasurement], bool]:
            # Decoded on the reader's thread too: a page of an export is not decoded on the event loop.
            fetched = conn.execute(sql, (*params, limit + 1)).fetchall()
            return [_from_row(values) for values in fetched[:limit]], len(fetched) > limit

        rows, more = await self._reader.run(read)
        return rows, encode_cursor(rows[-1]) if more else None

    def iterate(self, f: MeasurementFilter, batch: int = 1000) -> AsyncIterator[StoredMeasurement]:
        return iterate_pages(self, f, batch)

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(connection)`` on the reader's thread, for reads the interface has no method for (an
        export's summary in bulk, collector/export_rows.py). ``fn`` must only read."""
        return await self._reader.run(fn)

    async def ping(self) -> None:
        await self._reader.run(lambda conn: conn.execute("SELECT count(*) FROM schema_migrations").fetchone())

    async def close(self) -> None:
        await self._group_commit.drain()
        await self._writer.close()
        await self._reader.close()

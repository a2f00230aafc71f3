"""The shared store: PostgreSQL through an asyncpg pool, for several collectors behind a load balancer.

Duplicates are settled by the primary key of ``envelopes`` (``ON CONFLICT DO NOTHING``), written in the
same statement as the measurement (a batch is one call of migration 5's function: one round trip), so two
collectors receiving the same measurement at once still store it once and tell exactly one submitter
"accepted". ``measurements`` is partitioned by month of ``measurement_start_time`` (migration 2): before
writing, a collector makes sure the months of its batch have their partition (rows of a month without one
would still land in the default partition).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from . import postgres_tokens
from .base import (
    BatchOutcome,
    DoubleSpend,
    IssuerKeyRecord,
    MeasurementFilter,
    StoredMeasurement,
    StoreError,
    TokenSpend,
    UnstorableError,
    as_utc,
    decode_cursor,
    encode_cursor,
    filter_sql,
    iterate_pages,
)
from .migrations import BATCH_FUNCTION, DOUBLE_SPEND_STATE, PARTITION_FUNCTION, POSTGRES

__all__ = ["PostgresStore"]

_COLUMNS = (
    "measurement_uid, received_at, measurement_start_time, probe_cc, probe_asn, test_name, input, domain, "
    "blocking, anomaly, technique, fingerprint_key, verdict_json, payload, flags, signature_scheme, "
    "signature, ephemeral_key, token, token_epoch, token_key_id"
)
# The whole batch in one statement and one round trip: migration 5's function (its parameters in order:
# the token's four, the envelopes' three, then the rows' columns as _columns gives them).
_BATCH_TYPES = (
    "bytea", "bytea", "bigint", "text",  # the token (all NULL without one)
    "text[]", "bytea[]", "bytea[]",  # the envelopes: uid, signature, public key
    "timestamptz[]", "timestamptz[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "boolean[]",
    "text[]", "text[]", "text[]", "bytea[]", "text[]", "text[]", "bytea[]", "bytea[]", "bytea[]", "bigint[]",
    "text[]",
)  # fmt: skip
_STORE_BATCH = (
    f"SELECT replayed, stored FROM {BATCH_FUNCTION}("
    + ", ".join(f"${n}::{kind}" for n, kind in enumerate(_BATCH_TYPES, 1))
    + ")"
)
_SELECT_PAYLOADS = "SELECT measurement_uid, payload FROM measurements WHERE measurement_uid = ANY($1::text[])"
_ENSURE_PARTITION = f"SELECT {PARTITION_FUNCTION}($1::date)"
# Any constant shared by every gatewatch collector: serialises concurrent migrations across processes.
_MIGRATION_LOCK = 0x6761746577617463  # "gatewatc"


def _month(moment: datetime) -> date:
    """The first day (UTC) of the month holding ``moment``: the partition it belongs to."""
    day = moment.astimezone(UTC).date()
    return day.replace(day=1)


def _from_record(record: Any) -> StoredMeasurement:
    return StoredMeasurement(
        measurement_uid=record["measurement_uid"],
        received_at=record["received_at"],
        measurement_start_time=record["measurement_start_time"],
        probe_cc=record["probe_cc"],
        probe_asn=record["probe_asn"],
        test_name=record["test_name"],
        input=record["input"],
        domain=record["domain"],
        blocking=record["blocking"],
        anomaly=record["anomaly"],
        technique=record["technique"],
        fingerprint_key=record["fingerprint_key"],
        verdict_json=record["verdict_json"],
        payload=bytes(record["payload"]),
        flags=tuple(record["flags"]),
        signature_scheme=record["signature_scheme"],
        signature=_blob(record["signature"]),
        ephemeral_key=_blob(record["ephemeral_key"]),
        token=_blob(record["token"]),
        token_epoch=record["token_epoch"],
        token_key_id=record["token_key_id"],
    )


def _blob(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


async def _migrate(conn: Any) -> int:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
    )
    for version, statements in POSTGRES:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            if current < version:
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", version
                )
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


def _columns(rows: Sequence[StoredMeasurement]) -> list[list[Any]]:
    """The rows as one array per column, in the batch function's order (after the uids it shares with the
    envelopes)."""
    return [
        [r.received_at for r in rows],
        [r.measurement_start_time for r in rows],
        [r.probe_cc for r in rows],
        [r.probe_asn for r in rows],
        [r.test_name for r in rows],
        [r.input for r in rows],
        [r.domain for r in rows],
        [r.blocking for r in rows],
        [r.anomaly for r in rows],
        [r.technique for r in rows],
        [r.fingerprint_key for r in rows],
        [r.verdict_json for r in rows],
        [r.payload for r in rows],
        [json.dumps(list(r.flags)) for r in rows],
        [r.signature_scheme for r in rows],
        [r.signature for r in rows],
        [r.ephemeral_key for r in rows],
        [r.token for r in rows],
        [r.token_epoch for r in rows],
        [r.token_key_id for r in rows],
    ]


class PostgresStore:
    """See :class:`~.base.Store`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.schema_version = 0
        # Months whose partition this process has made sure of (a partition is never dropped while in use).
        self._months: set[date] = set()

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: cannot connect: {exc}") from exc
        store = cls(pool)
        try:
            # CREATE TABLE IF NOT EXISTS races between collectors too, so take the lock around it as well.
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
                try:
                    store.schema_version = await _migrate(conn)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await pool.close()
            raise StoreError(f"postgresql: migration failed: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        # Last month, this one and the next: what time sanity lets in (30 days back, an hour ahead).
        today = datetime.now(UTC)
        try:
            await store._ensure_partitions({_month(today + timedelta(days=d)) for d in (-31, 0, 31)})
        except StoreError:
            await pool.close()
            raise
        return store

    async def _ensure_partitions(self, months: set[date]) -> None:
        missing = sorted(months - self._months)
        if not missing:
            return
        try:
            async with self._pool.acquire() as conn:
                for month in missing:
                    await conn.execute(_ENSURE_PARTITION, month)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: cannot create a partition: {exc}") from exc
        self._months.update(missing)

    async def insert_many(
        self, rows: Sequence[StoredMeasurement], envelopes: Sequence[tuple[bytes, bytes]]
    ) -> list[bool]:
        return (await self.insert_batch(rows, envelopes, None)).inserted

    async def insert_batch(
        self,
        rows: Sequence[StoredMeasurement],
        envelopes: Sequence[tuple[bytes, bytes]],
        spend: TokenSpend | None,
    ) -> BatchOutcome:
        if len(rows) != len(envelopes):
            raise ValueError("one envelope per row")
        if not rows and spend is None:
            return BatchOutcome([])
        # A uid repeated inside one batch would make ON CONFLICT see the same row twice: send each once.
        first_index: dict[str, int] = {}
        for index, row in enumerate(rows):
            first_index.setdefault(row.measurement_uid, index)
        unique = [rows[i] for i in first_index.values()]
        await self._ensure_partitions({_month(r.measurement_start_time) for r in unique})
        token = (spend.spent_id, spend.batch_digest, spend.epoch, spend.key_id) if spend else (None,) * 4
        envelope_columns = [
            [r.measurement_uid for r in unique],
            [envelopes[i][0] for i in first_index.values()],
            [envelopes[i][1] for i in first_index.values()],
        ]
        try:
            async with self._pool.acquire() as conn:
                # One statement: atomic without a transaction block (so without its two round trips).
                record = await conn.fetchrow(_STORE_BATCH, *token, *envelope_columns, *_columns(unique))
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == DOUBLE_SPEND_STATE:
                raise DoubleSpend("the token was spent on another batch") from None
            if isinstance(exc, asyncpg.DataError):
                # Class 22 (e.g. "invalid byte sequence for encoding UTF8: 0x00" for a NUL in text) and
                # asyncpg's own encoding errors: the data is at fault, and the statement rolled back.
                raise UnstorableError(f"postgresql: {exc}") from exc
            raise StoreError(f"postgresql: {exc}") from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        new = set(record["stored"])
        replayed = bool(record["replayed"])
        # A repeat of a uid earlier in the same batch is a duplicate, like a repeat from an earlier batch.
        inserted = [
            row.measurement_uid in new and first_index[row.measurement_uid] == i for i, row in enumerate(rows)
        ]
        return BatchOutcome(inserted, replayed)

    async def _run(self, fn: Any) -> Any:
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def issuer_keys(self) -> list[IssuerKeyRecord]:
        return await self._run(postgres_tokens.issuer_keys)  # type: ignore[no-any-return]

    async def add_issuer_key(self, record: IssuerKeyRecord) -> IssuerKeyRecord:
        return await self._run(lambda conn: postgres_tokens.add_issuer_key(conn, record))  # type: ignore[no-any-return]

    async def retire_issuer_keys(self, before_epoch: int) -> int:
        return await self._run(lambda conn: postgres_tokens.retire_issuer_keys(conn, before_epoch))  # type: ignore[no-any-return]

    async def charge_tokens(
        self, key_hash: bytes, epoch: int, count: int, quota: int, nonce: bytes, enrol: bool, now: datetime
    ) -> int:
        return await self._run(  # type: ignore[no-any-return]
            lambda conn: postgres_tokens.charge_tokens(conn, key_hash, epoch, count, quota, nonce, enrol, now)
        )

    async def stored_payloads(self, uids: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(uids))
        if not unique:
            return {}
        try:
            async with self._pool.acquire() as conn:
                records = await conn.fetch(_SELECT_PAYLOADS, unique)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        return {record[0]: bytes(record[1]) for record in records}

    async def page(
        self, f: MeasurementFilter, cursor: str | None, limit: int
    ) -> tuple[list[StoredMeasurement], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = decode_cursor(cursor) if cursor is not None else None
        where, params = filter_sql(f, lambda n: f"${n}", as_utc, after)
        sql = (
            f"SELECT {_COLUMNS} FROM measurements{where} "
            f"ORDER BY measurement_start_time, measurement_uid LIMIT ${len(params) + 1}"
        )
        try:
            async with self._pool.acquire() as conn:
                fetched = await conn.fetch(sql, *params, limit + 1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        rows = [_from_record(record) for record in fetched[:limit]]
        next_cursor = encode_cursor(rows[-1]) if len(fetched) > limit else None
        return rows, next_cursor

    async def received_keys_after(
        self, after: tuple[datetime, str], before: datetime, started_since: datetime, limit: int
    ) -> list[tuple[datetime, str]]:
        """(received_at, uid) of the rows received after ``after`` and before ``before``, in that order,
        whose start time is at least ``started_since`` (which keeps the scan to the recent partitions): what
        the collectors on this database stored lately (collector/peer_sync.py). Keys only: a look goes back
        over rows it has seen, and those need not travel again."""
        sql = (
            "SELECT received_at, measurement_uid FROM measurements"
            " WHERE (received_at, measurement_uid) > ($1, $2) AND received_at < $3"
            " AND measurement_start_time >= $4"
            " ORDER BY received_at, measurement_uid LIMIT $5"
        )
        try:
            async with self._pool.acquire() as conn:
                fetched = await conn.fetch(sql, after[0], after[1], before, started_since, limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        return [(record[0], record[1]) for record in fetched]

    async def received_rows(
        self, keys: Sequence[tuple[datetime, str]], started_since: datetime
    ) -> list[StoredMeasurement]:
        """The rows of ``keys`` (one page of :meth:`received_keys_after`, same ``started_since``), in key
        order. The keys' received_at range bounds the scan (the page's rows by the received_at index)."""
        if not keys:
            return []
        sql = (
            f"SELECT {_COLUMNS} FROM measurements WHERE received_at BETWEEN $3 AND $4"
            " AND measurement_start_time >= $5"
            " AND (received_at, measurement_uid) IN (SELECT * FROM unnest($1::timestamptz[], $2::text[]))"
            " ORDER BY received_at, measurement_uid"
        )
        times = [k[0] for k in keys]
        try:
            async with self._pool.acquire() as conn:
                fetched = await conn.fetch(
                    sql, times, [k[1] for k in keys], min(times), max(times), started_since
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        return [_from_record(record) for record in fetched]

    def iterate(self, f: MeasurementFilter, batch: int = 1000) -> AsyncIterator[StoredMeasurement]:
        return iterate_pages(self, f, batch)

    async def export_fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """The rows of a read-only export query (collector/export_postgres.py)."""
        try:
            async with self._pool.acquire() as conn:
                return [tuple(record) for record in await conn.fetch(sql, *args)]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def export_rows(self, uids: Sequence[str]) -> dict[str, StoredMeasurement]:
        """The stored rows of ``uids`` by uid: the few rows an export writes the exact way
        (collector/export_stream.py)."""
        sql = f"SELECT {_COLUMNS} FROM measurements WHERE measurement_uid = ANY($1::text[])"
        try:
            async with self._pool.acquire() as conn:
                records = await conn.fetch(sql, list(uids))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        return {record["measurement_uid"]: _from_record(record) for record in records}

    async def export_copy(
        self, query: str, args: Sequence[object], output: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """``COPY (query) TO STDOUT`` (text format), each piece of output handed to ``output`` as it
        arrives (collector/export_postgres.py)."""
        try:
            async with self._pool.acquire() as conn:
                await conn.copy_from_query(query, *args, output=output)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def ping(self) -> None:
        try:
            async with self._pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

"""PostgreSQL's monthly partitions of ``measurements`` (migration 2): rows land in their month's partition,
partitions appear on demand (also for two collectors at once), rows parked in the default partition move
to their month, and a database at version 1 is converted with every row, envelope and duplicate rule kept."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gatewatch.collector.store import MeasurementFilter, open_store
from gatewatch.collector.store.migrations import PARTITION_FUNCTION, POSTGRES

from ..conftest import create_database
from .test_stores import all_pages, envelope_of, row

pytestmark = pytest.mark.postgres

V1 = datetime(2025, 11, 30, 23, 59, tzinfo=UTC)  # the last minute of November: month edges matter


async def _partition_of(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch(
            "SELECT measurement_uid, tableoid::regclass::text AS part FROM measurements"
        )
    finally:
        await conn.close()
    return {r["measurement_uid"]: r["part"] for r in records}


async def test_each_row_lands_in_its_months_partition(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    store = await open_store(url)
    try:
        rows = [row(0, measurement_start_time=V1), row(1, measurement_start_time=V1 + timedelta(minutes=1))]
        assert await store.insert_many(rows, [envelope_of(r) for r in rows]) == [True, True]
        now = row(2, measurement_start_time=datetime.now(UTC))
        assert await store.insert_many([now], [envelope_of(now)]) == [True]
        assert await all_pages(store, MeasurementFilter(), 2) == [*rows, now]
    finally:
        await store.close()
    parts = await _partition_of(url)
    assert parts[rows[0].measurement_uid] == "measurements_2025_11"
    assert parts[rows[1].measurement_uid] == "measurements_2025_12"
    assert parts[now.measurement_uid] == "measurements_" + now.measurement_start_time.strftime("%Y_%m")


async def test_two_collectors_creating_one_month_at_once_both_succeed(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    stores = [await open_store(url) for _ in range(4)]
    try:
        batches = [[row(i, measurement_start_time=datetime(2024, 2, 10, tzinfo=UTC))] for i in range(4)]
        results = await asyncio.gather(
            *(s.insert_many(b, [envelope_of(b[0])]) for s, b in zip(stores, batches, strict=True))
        )
        assert results == [[True]] * 4
    finally:
        for s in stores:
            await s.close()
    assert set((await _partition_of(url)).values()) == {"measurements_2024_02"}


async def test_rows_parked_in_the_default_partition_move_to_their_month(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    store = await open_store(url)
    await store.close()
    parked = row(0, measurement_start_time=datetime(2023, 5, 5, tzinfo=UTC))
    conn = await asyncpg.connect(url)
    try:  # as if written while the month had no partition yet
        await conn.execute(
            "INSERT INTO measurements_default SELECT $1, $2, $3, 'XL', 'AS64501', 'web', 'http://a.lab/',"
            " 'a.lab', 'false', false, NULL, NULL, '{}', '\\x00', '{}'",
            parked.measurement_uid,
            parked.received_at,
            parked.measurement_start_time,
        )
        await conn.execute(f"SELECT {PARTITION_FUNCTION}($1::date)", parked.measurement_start_time.date())
        assert await conn.fetchval("SELECT count(*) FROM measurements_default") == 0
    finally:
        await conn.close()
    assert await _partition_of(url) == {parked.measurement_uid: "measurements_2023_05"}


async def test_a_version_1_database_is_converted_with_everything_kept(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    (version, statements) = POSTGRES[0]
    assert version == 1
    rows = [
        row(i, measurement_start_time=V1 + timedelta(minutes=i), flags=("asn_mismatch",)) for i in range(3)
    ]
    conn = await asyncpg.connect(url)
    try:  # what a collector of the previous release left behind
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_migrations VALUES (1, now())")
        for r in rows:
            await conn.execute(
                "INSERT INTO measurements VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
                *[getattr(r, f.name) for f in dataclasses.fields(r)][:14],
                list(r.flags),
            )
            await conn.execute(
                "INSERT INTO envelopes VALUES ($1, $2, $3)", r.measurement_uid, *envelope_of(r)
            )
    finally:
        await conn.close()
    store = await open_store(url)
    try:
        assert store.schema_version == POSTGRES[-1][0]
        assert await all_pages(store, MeasurementFilter(), 2) == rows
        # the duplicate rule survives the conversion: a converted row sent again is not stored twice
        fresh = row(9, measurement_start_time=datetime.now(UTC))
        assert await store.insert_many([rows[0], fresh], [envelope_of(rows[0])] * 2) == [False, True]
    finally:
        await store.close()
    parts = await _partition_of(url)
    assert parts[rows[0].measurement_uid] == "measurements_2025_11"
    assert parts[rows[1].measurement_uid] == parts[rows[2].measurement_uid] == "measurements_2025_12"
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM envelopes") == 4
        assert await conn.fetchval("SELECT to_regclass('measurements_v1')") is None
    finally:
        await conn.close()

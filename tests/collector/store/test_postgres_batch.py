"""PostgreSQL's batch function (migration 5, ``gatewatch_store_batch``): a batch in one statement, so
duplicates are settled by the envelopes' key, a bad item rolls its whole batch back (ingest then stores
the items one by one), a crash in the middle of a batch leaves nothing of it, and a database of the
previous version is brought up with its rows kept and lz4 set on the large columns."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gatewatch.collector.store import MeasurementFilter, StoreError, UnstorableError, open_store
from gatewatch.collector.store.base import DoubleSpend, TokenSpend
from gatewatch.collector.store.migrations import BATCH_FUNCTION, POSTGRES

from ..conftest import create_database
from .test_stores import all_pages, envelope_of, row

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)


def _rows(count: int, first: int = 0) -> list:
    return [row(first + i, measurement_start_time=NOW - timedelta(minutes=i)) for i in range(count)]


async def _counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM measurements"),
            await conn.fetchval("SELECT count(*) FROM envelopes"),
            await conn.fetchval("SELECT count(*) FROM spent_tokens"),
        )
    finally:
        await conn.close()


async def test_duplicates_in_a_batch_across_batches_and_between_collectors(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    stores = [await open_store(url) for _ in range(2)]
    try:
        a, b, c = _rows(3)
        assert await stores[0].insert_many([a, b, a], [envelope_of(a)] * 3) == [True, True, False]
        assert await stores[1].insert_many([b, c], [envelope_of(b)] * 2) == [False, True]
        # The same new batch to two collectors at once: each row is new for exactly one of them.
        racing = _rows(20, first=100)
        results = await asyncio.gather(
            *(s.insert_many(racing, [envelope_of(r) for r in racing]) for s in stores)
        )
        assert all(x != y for x, y in zip(*results, strict=True))
        assert sorted(
            r.measurement_uid for r in await all_pages(stores[0], MeasurementFilter(), 50)
        ) == sorted(r.measurement_uid for r in [a, b, c, *racing])
    finally:
        for s in stores:
            await s.close()
    assert await _counts(url) == (23, 23, 0)


async def test_a_token_is_spent_with_its_batch_and_once(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    store = await open_store(url)
    try:
        rows = _rows(2)
        spend = TokenSpend(b"t" * 32, b"d" * 32, 7, "k1")
        outcome = await store.insert_batch(rows, [envelope_of(r) for r in rows], spend)
        assert (outcome.inserted, outcome.replayed) == ([True, True], False)
        again = await store.insert_batch(rows, [envelope_of(r) for r in rows], spend)
        assert (again.inserted, again.replayed) == ([False, False], True)
        other = _rows(1, first=50)
        with pytest.raises(DoubleSpend):
            await store.insert_batch(
                other, [envelope_of(other[0])], dataclasses.replace(spend, batch_digest=b"x" * 32)
            )
    finally:
        await store.close()
    assert await _counts(url) == (2, 2, 1)  # the refused batch stored nothing


async def test_a_bad_item_rolls_its_batch_back_and_the_others_store_alone(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    store = await open_store(url)
    try:
        good = _rows(3)
        bad = row(9, measurement_start_time=NOW, input="http://x.lab/\x00")  # PostgreSQL text holds no NUL
        batch = [good[0], bad, good[1], good[2]]
        spend = TokenSpend(b"u" * 32, b"d" * 32, 7, "k1")
        with pytest.raises(UnstorableError):
            await store.insert_batch(batch, [envelope_of(r) for r in batch], spend)
        assert await _counts(url) == (0, 0, 0)  # nothing of it, not even the token
        # What ingest does next: each item alone, so only the bad one is refused.
        for r in batch:
            if r is bad:
                with pytest.raises(UnstorableError):
                    await store.insert_many([r], [envelope_of(r)])
            else:
                assert await store.insert_many([r], [envelope_of(r)]) == [True]
    finally:
        await store.close()
    assert await _counts(url) == (3, 3, 0)


async def test_a_crash_in_the_middle_of_a_batch_leaves_nothing_of_it(pg_cluster) -> None:
    """The batch's statement is stopped half-way (its server process terminated while it waits on the last
    envelope, which another transaction holds): the token, the envelopes and the rows it had already written
    are all gone, the caller got an error (nothing acknowledged), and the batch sent again stores whole."""
    url = await create_database(pg_cluster)
    store = await open_store(url)
    blocker = await asyncpg.connect(url)
    watcher = await asyncpg.connect(url)
    try:
        rows = _rows(10)
        spend = TokenSpend(b"c" * 32, b"d" * 32, 7, "k1")
        blocked = rows[-1]
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute(
            "INSERT INTO envelopes VALUES ($1, $2, $3)", blocked.measurement_uid, *envelope_of(blocked)
        )
        attempt = asyncio.create_task(store.insert_batch(rows, [envelope_of(r) for r in rows], spend))
        victim = None
        for _ in range(100):  # until the batch's statement waits on the held envelope (bounded: 10 s)
            victim = await watcher.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                f"%{BATCH_FUNCTION}%",
            )
            if victim is not None:
                break
            await asyncio.sleep(0.1)
        assert victim is not None, "the batch never waited on the held envelope"
        assert await watcher.fetchval("SELECT pg_terminate_backend($1)", victim)
        with pytest.raises(StoreError):
            await attempt
        await blocking.rollback()
        assert await _counts(url) == (0, 0, 0)
        outcome = await store.insert_batch(rows, [envelope_of(r) for r in rows], spend)
        assert (outcome.inserted, outcome.replayed) == ([True] * 10, False)
    finally:
        await blocker.close()
        await watcher.close()
        await store.close()
    assert await _counts(url) == (10, 10, 1)


async def test_a_version_4_database_is_migrated_with_its_rows(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    old = _rows(3)
    conn = await asyncpg.connect(url)
    try:  # what a collector of the previous release left behind (the statements of versions 1 to 4)
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        for version, statements in POSTGRES[:4]:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, now())", version)
        for r in old:
            await conn.execute(
                "INSERT INTO envelopes VALUES ($1, $2, $3)", r.measurement_uid, *envelope_of(r)
            )
            await conn.execute(
                "INSERT INTO measurements (measurement_uid, received_at, measurement_start_time, probe_cc,"
                " probe_asn, test_name, input, domain, blocking, anomaly, technique, fingerprint_key,"
                " verdict_json, payload) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                *[getattr(r, f.name) for f in dataclasses.fields(r)][:14],
            )
        assert await conn.fetchval(f"SELECT to_regproc('{BATCH_FUNCTION}')") is None
    finally:
        await conn.close()
    store = await open_store(url)
    try:
        assert store.schema_version == 5
        assert {r.measurement_uid for r in await all_pages(store, MeasurementFilter(), 2)} == {
            r.measurement_uid for r in old
        }
        fresh = _rows(1, first=20)[0]
        assert await store.insert_many([old[0], fresh], [envelope_of(fresh)] * 2) == [False, True]
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    try:
        lz4 = await conn.fetch(
            "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a JOIN pg_class c"
            " ON c.oid = a.attrelid WHERE c.relname LIKE 'measurements%' AND a.attname IN"
            " ('payload', 'verdict_json') AND c.relkind IN ('r', 'p')"
        )
        assert {r["relname"] for r in lz4} >= {"measurements", "measurements_default"}
        try:
            await conn.execute("SET default_toast_compression = 'lz4'")
        except asyncpg.PostgresError:
            pytest.skip("this PostgreSQL was built without lz4: the migration keeps pglz")
        # Built with lz4 (Debian's is): the parent and every partition, old and new, compress with it.
        assert [(r["relname"], r["attname"]) for r in lz4 if r["attcompression"] != b"l"] == []
        assert await conn.fetchval("SELECT count(*) FROM measurements") == 4
    finally:
        await conn.close()

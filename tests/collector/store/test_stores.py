"""The Store contract, run against SQLite and a real PostgreSQL (``store_url`` is parametrised)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gatewatch.collector.store import (
    CursorError,
    MeasurementFilter,
    StoredMeasurement,
    StoreError,
    UnstorableError,
    open_store,
)
from gatewatch.collector.store.migrations import POSTGRES, SQLITE
from gatewatch.core.measurement import new_measurement_uid
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

LATEST = SQLITE[-1][0]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(n: int, **changes: object) -> StoredMeasurement:
    fields: dict[str, object] = dict(
        measurement_uid=new_measurement_uid(),
        received_at=T0 + timedelta(hours=1, microseconds=n),
        measurement_start_time=T0 + timedelta(minutes=n),
        probe_cc="XL",
        probe_asn="AS64501",
        test_name="web",
        input=f"http://site{n}.lab/",
        domain=f"site{n}.lab",
        blocking="false",
        anomaly=False,
        technique=None,
        fingerprint_key=None,
        verdict_json='{"blocking": false}',
        payload=b'{"measurement": %d, "bytes": "\\u00e9"}' % n,
        flags=(),
    )
    fields.update(changes)
    return StoredMeasurement(**fields)  # type: ignore[arg-type]


def envelope_of(r: StoredMeasurement) -> tuple[bytes, bytes]:
    return (b"s" * 64, b"k" * 32)


async def all_pages(store, f: MeasurementFilter, limit: int) -> list[StoredMeasurement]:
    rows, cursor, pages = [], None, 0
    while True:
        page, cursor = await store.page(f, cursor, limit)
        rows.extend(page)
        pages += 1
        assert pages < 1000  # bounded, whatever a bug in the cursor does
        if cursor is None:
            return rows


@pytest.fixture
async def store(store_url: str):
    s = await open_store(store_url)
    yield s
    await s.close()


async def test_round_trip_keeps_every_field(store) -> None:
    original = row(1, blocking="dns", anomaly=True, technique="dns.injection", fingerprint_key="abcd",
                   flags=("asn_mismatch", "cc_mismatch"), payload=bytes(range(256)))  # fmt: skip
    assert await store.insert_many([original], [envelope_of(original)]) == [True]
    rows, cursor = await store.page(MeasurementFilter(), None, 10)
    assert rows == [original]
    assert cursor is None
    assert rows[0].measurement_start_time.tzinfo is not None
    assert rows[0].received_at == original.received_at  # microseconds survive


async def test_duplicates_are_reported_not_stored_twice(store) -> None:
    a, b = row(1), row(2)
    assert await store.insert_many([a], [envelope_of(a)]) == [True]
    # A repeat from an earlier batch and a repeat inside the same batch are both duplicates.
    changed = dataclasses.replace(a, blocking="dns")
    assert await store.insert_many([changed, b, b], [envelope_of(a)] * 3) == [False, True, False]
    rows = await all_pages(store, MeasurementFilter(), 10)
    assert [r.measurement_uid for r in rows] == [a.measurement_uid, b.measurement_uid]
    assert rows[0].blocking == "false"  # the first copy is kept


async def test_stored_payloads_are_the_signed_bytes_of_stored_uids_only(store) -> None:
    """What ingest compares a resend with: byte-identical is a duplicate, anything else a uid_conflict."""
    rows = [row(i, payload=bytes([i]) * (i + 1) + b"\x00\xff") for i in range(3)]
    await store.insert_many(rows, [envelope_of(r) for r in rows])
    missing = new_measurement_uid()
    uids = [rows[0].measurement_uid, missing, rows[2].measurement_uid, rows[0].measurement_uid]
    assert await store.stored_payloads(uids) == {r.measurement_uid: r.payload for r in (rows[0], rows[2])}
    assert await store.stored_payloads([]) == {}
    many = [new_measurement_uid() for _ in range(1200)] + [rows[1].measurement_uid]  # past SQLite's limit
    assert await store.stored_payloads(many) == {rows[1].measurement_uid: rows[1].payload}


async def test_a_nul_in_text_is_unstorable_on_postgres_and_kept_by_sqlite(store, store_url) -> None:
    good, bad = row(1), row(2, input="http://site2.lab/\x00nul", domain="site2.lab")
    if store_url.startswith("sqlite"):
        # SQLite binds text with its length: the NUL is stored and read back, nothing is lost.
        assert await store.insert_many([good, bad], [envelope_of(good), envelope_of(bad)]) == [True, True]
        assert await all_pages(store, MeasurementFilter(), 10) == [good, bad]
        return
    # PostgreSQL's text cannot hold a NUL: the data's fault (not a StoreError, which means "try again"),
    # and the whole call is rolled back, so the caller can retry the rows one by one.
    with pytest.raises(UnstorableError) as refused:
        await store.insert_many([good, bad], [envelope_of(good), envelope_of(bad)])
    assert not isinstance(refused.value, StoreError)
    assert await all_pages(store, MeasurementFilter(), 10) == []
    assert await store.insert_many([good], [envelope_of(good)]) == [True]
    with pytest.raises(UnstorableError):
        await store.insert_many([bad], [envelope_of(bad)])
    assert await all_pages(store, MeasurementFilter(), 10) == [good]


async def test_text_without_a_utf8_form_is_unstorable(store) -> None:
    # A lone surrogate cannot be encoded for either backend (the model refuses it first at ingest).
    good, bad = row(1), row(2, input="http://site2.lab/\ud800")
    with pytest.raises(UnstorableError):
        await store.insert_many([good, bad], [envelope_of(good), envelope_of(bad)])
    assert await all_pages(store, MeasurementFilter(), 10) == []


async def test_empty_insert(store) -> None:
    assert await store.insert_many([], []) == []


async def test_pages_are_ordered_and_cover_everything_once(store) -> None:
    # Several rows share a start time, so the uid must break ties for the cursor to be exact.
    rows = [row(i % 4) for i in range(11)]
    await store.insert_many(rows, [envelope_of(r) for r in rows])
    expected = sorted(rows, key=lambda r: (r.measurement_start_time, r.measurement_uid))
    for limit in (1, 2, 3, 11, 50):
        assert await all_pages(store, MeasurementFilter(), limit) == expected
    first, cursor = await store.page(MeasurementFilter(), None, 11)
    assert cursor is None and first == expected


async def test_filters(store) -> None:
    rows = [
        row(0),
        row(1, probe_cc="YY", probe_asn="AS64502"),
        row(2, blocking="dns", anomaly=True, input="http://blocked.lab/a", domain="blocked.lab"),
        row(3, blocking="http-diff", anomaly=True, test_name="other"),
    ]
    await store.insert_many(rows, [envelope_of(r) for r in rows])

    async def uids(**f: object) -> list[str]:
        return [r.measurement_uid for r in await all_pages(store, MeasurementFilter(**f), 10)]  # type: ignore

    ids = [r.measurement_uid for r in rows]
    assert await uids() == ids
    assert await uids(probe_cc="YY") == [ids[1]]
    assert await uids(probe_asn="AS64501") == [ids[0], ids[2], ids[3]]
    assert await uids(anomaly=True) == [ids[2], ids[3]]
    assert await uids(anomaly=False) == [ids[0], ids[1]]
    assert await uids(blocking="dns") == [ids[2]]
    assert await uids(domain="blocked.lab") == [ids[2]]
    assert await uids(input="http://blocked.lab/a") == [ids[2]]
    assert await uids(test_name="other") == [ids[3]]
    # since is inclusive, until exclusive.
    assert await uids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [ids[1], ids[2]]
    assert await uids(probe_cc="XL", anomaly=True, blocking="http-diff") == [ids[3]]
    assert await uids(probe_cc="ZZ") == []


async def test_iterate_streams_every_row_in_order(store) -> None:
    rows = [row(i) for i in range(10)]
    await store.insert_many(rows, [envelope_of(r) for r in rows])
    seen = [r async for r in store.iterate(MeasurementFilter(), batch=3)]
    assert seen == rows
    assert [r async for r in store.iterate(MeasurementFilter(anomaly=True))] == []


async def test_bad_cursor_is_the_clients_fault(store) -> None:
    for cursor in ("not-a-cursor", "", "W10", "eyJhIjogMX0"):
        with pytest.raises(CursorError):
            await store.page(MeasurementFilter(), cursor, 10)
    with pytest.raises(ValueError):
        await store.page(MeasurementFilter(), None, 0)


async def test_ping_and_close(store_url: str) -> None:
    store = await open_store(store_url)
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()


async def test_migrations_are_idempotent_and_concurrent_opens_agree(store_url: str) -> None:
    # Several collectors starting at once against one database must not trip over each other.
    stores = await asyncio.gather(*(open_store(store_url) for _ in range(3)))
    try:
        latest = (SQLITE if store_url.startswith("sqlite") else POSTGRES)[-1][0]
        assert {s.schema_version for s in stores} == {latest}
        r = row(1)
        assert await stores[0].insert_many([r], [envelope_of(r)]) == [True]
        again = await open_store(store_url)
        assert again.schema_version == latest
        assert (await again.page(MeasurementFilter(), None, 5))[0] == [r]
        await again.close()
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_inserts_of_one_uid_accept_exactly_one(store_url: str) -> None:
    stores = [await open_store(store_url) for _ in range(2)]
    try:
        r = row(1)
        inserts = [s.insert_many([r], [envelope_of(r)]) for s in stores for _ in range(3)]
        results = await asyncio.gather(*inserts)
        assert sorted(x for (x,) in results) == [False] * 5 + [True]
    finally:
        for s in stores:
            await s.close()


async def test_naive_filter_times_are_utc(store) -> None:
    rows = [row(0), row(5)]
    await store.insert_many(rows, [envelope_of(r) for r in rows])
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None)
    assert await all_pages(store, MeasurementFilter(since=naive), 10) == [rows[1]]


async def test_unusable_sqlite_path_is_a_store_error(tmp_path) -> None:
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")


@pytest.mark.postgres
async def test_unreachable_postgres_is_a_store_error(tmp_path, pg_cluster) -> None:
    with pytest.raises(StoreError):
        await open_store(f"postgresql://postgres@/no_such_database?host={pg_cluster.socket_dir}")
    with pytest.raises(StoreError):
        await open_store(f"postgresql://postgres@/postgres?host={tmp_path}")  # no server there


async def test_unknown_url_scheme() -> None:
    with pytest.raises(ValueError):
        await open_store("mysql://nope")


async def test_token_signed_rows_round_trip(store) -> None:
    """A batch's token, ephemeral key, epoch and key id come back on each of its rows (SQLite keeps them
    once per batch), beside rows of another batch and rows signed with a long-term key."""

    def signed(n: int, batch: int) -> StoredMeasurement:
        return row(n, signature_scheme=SCHEME_BLIND_TOKEN, signature=bytes([n]) * 64,
                   ephemeral_key=bytes([batch]) * 32, token=bytes([batch]) * 288, token_epoch=2900 + batch,
                   token_key_id=f"ik-{batch}")  # fmt: skip

    first = [signed(n, 1) for n in range(3)]
    second = [signed(n, 2) for n in range(3, 5)]
    plain = [row(5)]
    for rows in (first, second, plain):
        assert await store.insert_many(rows, [envelope_of(r) for r in rows]) == [True] * len(rows)
    assert await store.insert_many(first[:1], [envelope_of(first[0])]) == [False]  # a resend
    stored, _ = await store.page(MeasurementFilter(), None, 100)
    assert stored == [*first, *second, *plain]

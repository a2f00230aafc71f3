"""Pages with a ``since`` filter continue from their cursor (both stores), and on SQLite the index range of
every such page starts at the cursor, not at ``since``: an export of a growing table stays linear."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewatch.collector.store import MeasurementFilter, StoredMeasurement, open_store
from gatewatch.collector.store.base import decode_cursor, encode_cursor
from gatewatch.collector.store.migrations import SQLITE
from gatewatch.collector.store.sqlite import page_sql
from gatewatch.core.measurement import new_measurement_uid

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _row(n: int) -> StoredMeasurement:
    return StoredMeasurement(
        measurement_uid=new_measurement_uid(),
        received_at=T0 + timedelta(hours=1, microseconds=n),
        measurement_start_time=T0 + timedelta(minutes=n // 3),  # three rows share each start time
        probe_cc=("XL", "YY")[n % 2],
        probe_asn="AS64501",
        test_name="web",
        input=f"http://site{n % 5}.lab/",
        domain=f"site{n % 5}.lab",
        blocking="false",
        anomaly=False,
        technique=None,
        fingerprint_key=None,
        verdict_json="{}",
        payload=b"{}",
    )


def _expected(rows: list[StoredMeasurement], f: MeasurementFilter) -> list[StoredMeasurement]:
    kept = [
        r
        for r in rows
        if (f.since is None or r.measurement_start_time >= f.since)
        and (f.until is None or r.measurement_start_time < f.until)
        and (f.probe_cc is None or r.probe_cc == f.probe_cc)
        and (f.domain is None or r.domain == f.domain)
    ]
    return sorted(kept, key=lambda r: (r.measurement_start_time, r.measurement_uid))


@pytest.fixture
async def filled(store_url: str):
    store = await open_store(store_url)
    rows = [_row(n) for n in range(60)]
    await store.insert_many(rows, [(b"s" * 64, b"k" * 32)] * len(rows))
    yield store, rows
    await store.close()


SINCE = T0 + timedelta(minutes=7)
FILTERS = [
    MeasurementFilter(since=SINCE),
    MeasurementFilter(since=SINCE, until=T0 + timedelta(minutes=15)),
    MeasurementFilter(since=SINCE, probe_cc="YY"),
    MeasurementFilter(since=SINCE, domain="site3.lab"),
    MeasurementFilter(since=SINCE.replace(tzinfo=None)),  # a naive time is UTC
]


@pytest.mark.parametrize("f", FILTERS, ids=["since", "until", "cc", "domain", "naive"])
@pytest.mark.parametrize("limit", [1, 4, 7, 100])
async def test_pages_since_cover_every_row_once_in_order(filled, f: MeasurementFilter, limit: int) -> None:
    store, rows = filled
    expected = _expected(rows, MeasurementFilter(**{**f.__dict__, "since": SINCE}))
    assert expected  # the filter keeps rows, and leaves some out
    seen, cursor = [], None
    for _ in range(200):
        page, cursor = await store.page(f, cursor, limit)
        seen.extend(page)
        if cursor is None:
            break
    assert seen == expected
    assert [r async for r in store.iterate(f, batch=limit)] == expected


async def test_a_cursor_from_before_since_or_exactly_at_it_continues_correctly(filled) -> None:
    store, rows = filled
    ordered = _expected(rows, MeasurementFilter())
    f = MeasurementFilter(since=SINCE)
    # A cursor handed out without the filter, well before ``since``: the filter still holds.
    early = encode_cursor(ordered[2])
    page, _ = await store.page(f, early, 100)
    assert page == _expected(rows, f)
    # A cursor on the first row at ``since`` (several rows share that time): the rest of them follow.
    at_since = next(i for i, r in enumerate(ordered) if r.measurement_start_time == SINCE)
    page, _ = await store.page(f, encode_cursor(ordered[at_since]), 100)
    assert page == ordered[at_since + 1 :]
    assert decode_cursor(encode_cursor(ordered[at_since]))[0] == SINCE
    # A cursor past ``until``: nothing, and no next page.
    late = MeasurementFilter(since=SINCE, until=SINCE + timedelta(minutes=1))
    assert await store.page(late, encode_cursor(ordered[-1]), 10) == ([], None)


@pytest.mark.parametrize(
    ("f", "index"),
    [
        (MeasurementFilter(since=SINCE), "measurements_by_time"),
        (MeasurementFilter(since=SINCE, until=SINCE + timedelta(days=1)), "measurements_by_time"),
        (MeasurementFilter(since=SINCE, probe_cc="XL"), "measurements_by_cc"),
        (MeasurementFilter(since=SINCE, domain="site1.lab"), "measurements_by_domain_page"),
        (MeasurementFilter(since=SINCE, probe_asn="AS64501", anomaly=False), "measurements_by_time"),
    ],
)
def test_sqlite_starts_each_page_at_its_cursor(tmp_path: Path, f: MeasurementFilter, index: str) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db")
    for _version, statements in SQLITE:
        for statement in statements:
            conn.execute(statement)
    after = (SINCE + timedelta(hours=1), "0192d1c4-0000-7000-8000-000000000000")
    sql, params = page_sql(f, after)
    plan = " ".join(str(step[-1]) for step in conn.execute("EXPLAIN QUERY PLAN " + sql, (*params, 10)))
    conn.close()
    # One index search whose range begins at the cursor's (time, uid), with no sort after it.
    assert f"USING INDEX {index} (" in plan, plan
    assert "(measurement_start_time,measurement_uid)>(?,?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan

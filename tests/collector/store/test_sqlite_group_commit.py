"""Group commit (store/sqlite_group_commit.py) on a real SQLite store: concurrent batches share a
transaction, one batch's bad data fails that batch alone, and a kill -9 loses no acknowledged row."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gatewatch.collector.store import MeasurementFilter
from gatewatch.collector.store.base import DoubleSpend, TokenSpend, UnstorableError
from gatewatch.collector.store.sqlite import SQLiteStore

from .test_stores import envelope_of, row


@pytest.fixture
async def store(tmp_path: Path):
    s = await SQLiteStore.open(str(tmp_path / "group.db"))
    yield s
    await s.close()


def _count_groups(store: SQLiteStore) -> list[int]:
    groups: list[int] = []
    run = store._group_commit.run

    async def counting(fn):  # the real writer, counted
        groups.append(1)
        return await run(fn)

    store._group_commit.run = counting
    return groups


async def test_concurrent_batches_share_one_commit(store: SQLiteStore) -> None:
    groups = _count_groups(store)
    batches = [[row(10 * b + n) for n in range(3)] for b in range(8)]
    answers = await asyncio.gather(
        *(store.insert_batch(rows, [envelope_of(r) for r in rows], None) for rows in batches)
    )
    assert [a.inserted for a in answers] == [[True] * 3] * 8
    assert len(groups) == 1  # handed in before the first commit began: one transaction for all eight
    stored, _ = await store.page(MeasurementFilter(), None, 100)
    assert {r.measurement_uid for r in stored} == {r.measurement_uid for rows in batches for r in rows}


async def test_a_bad_batch_fails_alone_in_its_group(store: SQLiteStore) -> None:
    spend = TokenSpend(b"t" * 32, b"d" * 32, 2900, "ik-1")
    first = [row(1), row(2)]
    assert (await store.insert_batch(first, [envelope_of(r) for r in first], spend)).inserted == [True] * 2
    good = [row(3), row(4)]
    unstorable = [row(5), row(6, input="http://\ud800.lab/")]  # a lone surrogate: not UTF-8
    double_spent = [row(7)]
    other_spend = TokenSpend(b"t" * 32, b"e" * 32, 2900, "ik-1")  # the token again, another batch
    later = [row(8)]
    answers = await asyncio.gather(
        store.insert_batch(good, [envelope_of(r) for r in good], None),
        store.insert_batch(unstorable, [envelope_of(r) for r in unstorable], None),
        store.insert_batch(double_spent, [envelope_of(double_spent[0])], other_spend),
        store.insert_batch(later, [envelope_of(later[0])], None),
        return_exceptions=True,
    )
    assert [type(a).__name__ for a in answers] == [
        "BatchOutcome",
        "UnstorableError",
        "DoubleSpend",
        "BatchOutcome",
    ]
    assert isinstance(answers[1], UnstorableError) and isinstance(answers[2], DoubleSpend)
    stored, _ = await store.page(MeasurementFilter(), None, 100)
    # nothing of the two failed batches, not even the unstorable batch's storable row
    assert [r.measurement_uid for r in stored] == [r.measurement_uid for r in (*first, *good, *later)]


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    from gatewatch.collector.store.sqlite import SQLiteStore
    from gatewatch.collector.store import StoredMeasurement
    from gatewatch.core.measurement import new_measurement_uid

    def row():
        now = datetime.now(UTC)
        return StoredMeasurement(measurement_uid=new_measurement_uid(), received_at=now,
            measurement_start_time=now, probe_cc="XL", probe_asn="AS64501", test_name="web",
            input="http://site.lab/", domain="site.lab", blocking="false", anomaly=False, technique=None,
            fingerprint_key=None, verdict_json='{"blocking": false}', payload=b"x" * 2000)

    async def writer(store):
        for _ in range(2000):  # bounded; the test kills it long before
            rows = [row() for _ in range(5)]
            outcome = await store.insert_batch(rows, [(b"s" * 64, b"k" * 32)] * 5, None)
            assert outcome.inserted == [True] * 5
            print(*(r.measurement_uid for r in rows), flush=True)  # only once acknowledged

    async def main():
        store = await SQLiteStore.open(sys.argv[1])
        await asyncio.gather(*(writer(store) for _ in range(4)))

    asyncio.run(main())
    """
)


async def _stored_uids(path: Path) -> list[str]:
    store = await SQLiteStore.open(str(path))
    try:
        return [r.measurement_uid async for r in store.iterate(MeasurementFilter())]
    finally:
        await store.close()


def test_kill_9_during_group_commits_loses_no_acknowledged_row(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged += line.split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    acknowledged += proc.stdout.read().split()  # printed before the kill: acknowledged too
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 200

    stored = asyncio.run(_stored_uids(path))
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored)) and len(stored) % 5 == 0  # whole batches only

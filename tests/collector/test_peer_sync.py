"""Collectors on one PostgreSQL follow each other's rows (collector/peer_sync.py), against a real cluster:
what another collector stored is added once, uncounted; this collector's own rows are not read back twice;
rows younger than SETTLE wait for the next look."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.peer_sync import OVERLAP, SETTLE, PeerSync, SharedStore
from gatewatch.collector.store import open_store
from gatewatch.core.measurement import new_measurement_uid

from .conftest import create_database
from .test_aggregate import Clock, row

pytestmark = pytest.mark.postgres


def fresh(asn: str, state: str, received: datetime, *, domain: str = "a.example"):
    """A row of the aggregate tests with a real uid, measured a minute before it was received."""
    base = row(asn, state, 1, domain=domain, clock_at=received)
    return dataclasses.replace(base, measurement_uid=new_measurement_uid(), received_at=received)


async def test_rows_of_other_collectors_are_added_once_and_not_counted(pg_cluster) -> None:
    url = await create_database(pg_cluster)
    here, there = await open_store(url), await open_store(url)
    try:
        assert isinstance(here, SharedStore)
        now = datetime.now(UTC).replace(microsecond=0)
        clock = Clock(now)
        aggregate = InterferenceAggregate(clock=clock)
        sync = PeerSync(aggregate, here, clock=clock)

        theirs = [
            fresh("AS1", "F", now - timedelta(seconds=5)),
            fresh("AS2", "F", now - timedelta(seconds=4)),
        ]
        too_old = fresh("AS3", "F", now - OVERLAP - timedelta(seconds=5))  # the rebuild's, not the sync's
        assert await there.insert_many([*theirs, too_old], [(b"s", b"k")] * 3) == [True] * 3
        mine = fresh("AS3", ".", now - timedelta(seconds=3))
        assert await here.insert_many([mine], [(b"s", b"k")]) == [True]
        aggregate.add_rows([mine])  # the ingest hooks, in the order the app registers them
        sync.remember([mine])

        assert await sync.step() == 2
        assert await sync.step() == 0  # nothing twice
        # What a single collector that ingested all three itself would say.
        reference = InterferenceAggregate(clock=clock)
        reference.add_rows([*theirs, mine])
        assert aggregate.interference(scopes=["gateway", "isp", "none"]) == reference.interference(
            scopes=["gateway", "isp", "none"]
        )
        # The counters are this collector's own: the other one counts its rows.
        assert aggregate.snapshot().totals == {("XL", "web", "false"): (1, 0)}

        late = fresh("AS4", "F", now)  # received just now: left for the next look
        assert await there.insert_many([late], [(b"s", b"k")]) == [True]
        assert await sync.step() == 0
        clock.now = now + SETTLE + timedelta(seconds=1)
        assert await sync.step() == 1
        assert sync.added == 3
    finally:
        await here.close()
        await there.close()


async def test_a_look_reads_whole_only_the_rows_it_does_not_hold(pg_cluster) -> None:
    """Each look goes back ``OVERLAP`` over rows already held: only their keys travel again."""
    url = await create_database(pg_cluster)
    here, there = await open_store(url), await open_store(url)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        clock = Clock(now)
        sync = PeerSync(InterferenceAggregate(clock=clock), here, clock=clock)
        read_whole: list[int] = []
        real = here.received_rows

        async def counting(keys, started_since):  # type: ignore[no-untyped-def]
            read_whole.append(len(keys))
            return await real(keys, started_since)

        here.received_rows = counting  # type: ignore[method-assign]
        theirs = [fresh(f"AS{i}", "F", now - timedelta(seconds=10 - i)) for i in range(5)]
        assert await there.insert_many(theirs, [(b"s", b"k")] * 5) == [True] * 5
        mine = fresh("AS9", ".", now - timedelta(seconds=3))
        assert await here.insert_many([mine], [(b"s", b"k")]) == [True]
        sync.remember([mine])
        assert await sync.step() == 5
        assert read_whole == [5]  # theirs, not mine
        later = fresh("AS7", "F", now - timedelta(seconds=2))
        assert await there.insert_many([later], [(b"s", b"k")]) == [True]
        clock.now = now + timedelta(seconds=2)
        assert await sync.step() == 1
        assert read_whole == [5, 1]  # the overlap's six held rows went as keys only
    finally:
        await here.close()
        await there.close()

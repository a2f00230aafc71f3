"""agent/queue_writes.py: a pass's measurements committed together, within a bounded window."""

from __future__ import annotations

import asyncio

import pytest

from gatewatch.agent.queue import QueueFull
from gatewatch.agent.queue_writes import QueueWrites
from gatewatch.agent.settings import QueueSettings
from gatewatch.core.envelope import sign

from .conftest import make_measurement


def _signed(signing_key, n: int) -> list[tuple[str, bytes, object]]:
    items = []
    for i in range(n):
        m = make_measurement(url=f"http://grouped{i}.example/")
        payload = m.to_json_bytes()
        items.append((m.measurement_uid, payload, sign(payload, signing_key)))
    return items


def test_measurements_wait_at_most_the_window_then_are_committed_together(fill_queue, signing_key) -> None:
    queue, _ = fill_queue(0)
    items = _signed(signing_key, 5)

    async def scenario() -> list[int]:
        writes = QueueWrites(queue, window=0.05)
        seen = []
        for uid, payload, envelope in items:
            writes.add(uid, payload, envelope, local_only=False)
        seen.append(queue.counts()["pending"])  # nothing committed yet: one commit for the window
        for _ in range(100):  # bounded: at most 100 x 10 ms
            await asyncio.sleep(0.01)
            if queue.counts()["pending"]:
                break
        seen.append(queue.counts()["pending"])
        seen.append(len(writes))
        return seen

    assert asyncio.run(scenario()) == [0, 5, 0]
    stored = {row.measurement_uid: row for row in queue.pending(10)}
    assert list(stored) == [uid for uid, _, _ in items]  # queue order is the order handed in
    for uid, payload, envelope in items:
        assert stored[uid].payload == payload and stored[uid].envelope == envelope


def test_flush_commits_what_waits_and_duplicates_nothing(fill_queue, signing_key) -> None:
    queue, uids = fill_queue(1)
    old = queue.pending()[0]
    items = _signed(signing_key, 2)

    async def scenario() -> int:
        writes = QueueWrites(queue, window=60)  # never by the timer here: by flush alone
        writes.add(old.measurement_uid, old.payload, old.envelope, local_only=False)  # already queued
        for uid, payload, envelope in items:
            writes.add(uid, payload, envelope, local_only=False)
        return writes.flush() + writes.flush()  # the second finds nothing waiting

    assert asyncio.run(scenario()) == 2
    assert [row.measurement_uid for row in queue.pending(10)] == [*uids, *(uid for uid, _, _ in items)]


def test_the_unsent_cap_counts_the_measurements_waiting_in_memory(fill_queue, signing_key) -> None:
    queue, _ = fill_queue(1, QueueSettings(max_unsent=3))
    items = _signed(signing_key, 4)

    async def scenario() -> None:
        writes = QueueWrites(queue, window=60)
        for uid, payload, envelope in items[:2]:
            writes.add(uid, payload, envelope, local_only=False)
        uid, payload, envelope = items[2]
        with pytest.raises(QueueFull):  # 1 in the queue + 2 waiting: the third is refused when handed in
            writes.add(uid, payload, envelope, local_only=False)
        writes.add(uid, payload, envelope, local_only=True)  # local rows are not held back by the cap
        writes.flush()

    asyncio.run(scenario())
    assert queue.counts() == {"pending": 3, "sent": 0, "quarantined": 0, "local": 1}


def test_enqueue_many_commits_what_fits_and_refuses_the_rest(fill_queue, signing_key) -> None:
    queue, _ = fill_queue(2, QueueSettings(max_unsent=3))
    items = _signed(signing_key, 2)
    with pytest.raises(QueueFull):
        queue.enqueue_many([(uid, payload, envelope, False) for uid, payload, envelope in items])
    assert queue.counts()["pending"] == 3
    assert queue.get(items[0][0]) is not None and queue.get(items[1][0]) is None


def test_an_envelope_that_does_not_carry_the_payload_is_refused(fill_queue, signing_key) -> None:
    queue, _ = fill_queue(0)
    uid, payload, _ = _signed(signing_key, 1)[0]

    async def scenario() -> None:
        writes = QueueWrites(queue, window=60)
        with pytest.raises(ValueError):
            writes.add(uid, payload, sign(b"other bytes", signing_key), local_only=False)

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        queue.enqueue_many([(uid, payload, sign(b"other bytes", signing_key), False)])
    assert queue.counts()["pending"] == 0

"""Token buckets: allowance, refill, refusal without spending, bounded memory."""

from __future__ import annotations

import pytest

from gatewatch.collector.ratelimit import TokenBuckets, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10, clock=clock)
    assert [buckets.take(b"a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take(b"a")
    assert wait == pytest.approx(0.5)
    assert buckets.take(b"a") == pytest.approx(0.5)  # a refusal spends nothing
    clock.now += 0.5
    assert buckets.take(b"a") == 0.0
    assert buckets.take(b"b") == 0.0  # keys are independent
    clock.now += 100
    assert [buckets.take(b"a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refill stops at the burst
    assert buckets.take(b"a") > 0


def test_memory_is_bounded_and_forgets_the_least_recent() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=3, clock=clock)
    for key in (b"a", b"b", b"c"):
        assert buckets.take(key) == 0.0
    assert buckets.take(b"a") > 0  # touches a: b is now the least recently seen
    for n in range(100):
        buckets.take(b"k%d" % n)
        assert len(buckets) <= 3
    assert buckets.take(b"b") == 0.0  # forgotten, so it starts again with a full bucket


def test_retry_after_seconds() -> None:
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.2) == 2


def test_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1, max_keys=1)


def test_due_tells_the_wait_and_spends_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=1, max_keys=10, clock=clock)
    assert buckets.due(b"a") == 0.0 and buckets.due(b"a") == 0.0  # an unknown key: allowed, nothing spent
    assert buckets.take(b"a") == 0.0
    assert buckets.due(b"a") == pytest.approx(0.5) == buckets.take(b"a")
    clock.now += 0.5
    assert buckets.due(b"a") == 0.0 and buckets.take(b"a") == 0.0

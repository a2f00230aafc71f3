"""Per-key token buckets in bounded memory.

Keys are agents' public keys (never addresses: an address must not even sit in memory as a table of who
submitted). When the table is full the least recently seen key is forgotten; a forgotten key starts again
with a full bucket, which costs at most one burst and keeps memory fixed whatever an attacker sends.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBuckets", "retry_after_seconds"]


def retry_after_seconds(wait: float) -> int:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: bytes) -> float:
        """Spend one token of ``key``'s bucket: 0.0 when allowed, else the seconds until one is due
        (nothing is spent on a refusal, so a client that waits that long succeeds)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._remember(key, tokens - 1.0, now)
            return 0.0
        self._remember(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def due(self, key: bytes) -> float:
        """The seconds until ``key`` may spend a token (0.0: now), spending nothing."""
        tokens, at = self._buckets.get(key, (float(self.burst), self._clock()))
        tokens = min(float(self.burst), tokens + (self._clock() - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _remember(self, key: bytes, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)  # re-inserted at the end: most recently seen
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

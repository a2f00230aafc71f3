"""One clock for every step of a measurement, so that each probe records its timings the same way.

A probe never reads the wall clock for step timings: it asks the measurement's ``Trace`` for seconds
elapsed since the measurement began (``t0`` when a step starts, ``t`` when it ends), as OONI does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Trace"]


@dataclass
class Trace:
    """Elapsed-time source for one measurement; cheap to create, shared by its probes."""

    origin: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since the measurement started, rounded to microseconds."""
        return round(time.monotonic() - self.origin, 6)

"""prometheus_client's Counter, Gauge and Histogram, telling the /metrics page when they changed.

Each has a ``cache_key()`` (collector/exposition.py's protocol): a count of changes shared by every tracked
metric, bumped after each change of a value or of the set of series (``labels()`` may add a child,
``remove()`` and ``clear()`` drop some). Between two changes the page serves the text it rendered, so
back-to-back scrapes do not render the ingest metrics again and again (bench/scrape_latency.py). Each bump
follows its change, so a render that read the key before collecting holds every change counted up to it;
a bump lost to a race between threads still moves the count past what any render read.

A tracked gauge cannot follow a function (``set_function``): its value would change with no call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["TrackedCounter", "TrackedGauge", "TrackedHistogram"]


class _Changes:
    count = 0


def _changed() -> None:
    _Changes.count += 1


class _Tracked:
    """Mixin for a prometheus_client metric: ``labels``, ``remove`` and ``clear`` count as changes."""

    def cache_key(self) -> int:
        return _Changes.count

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        child = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        _changed()  # a new child is a new series (this costs less than finding out whether it was)
        return child

    def remove(self, *labelvalues: Any) -> None:
        super().remove(*labelvalues)  # type: ignore[misc]
        _changed()

    def clear(self) -> None:
        super().clear()  # type: ignore[misc]
        _changed()


class TrackedCounter(_Tracked, Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        _changed()

    def reset(self) -> None:
        super().reset()
        _changed()


class TrackedGauge(_Tracked, Gauge):
    def inc(self, amount: float = 1) -> None:
        super().inc(amount)
        _changed()

    def dec(self, amount: float = 1) -> None:
        super().dec(amount)
        _changed()

    def set(self, value: float) -> None:
        super().set(value)
        _changed()

    def set_function(self, f: Any) -> None:
        raise TypeError("a tracked gauge cannot follow a function: use prometheus_client.Gauge")


class TrackedHistogram(_Tracked, Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        _changed()

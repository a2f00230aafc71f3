"""prometheus_client's Counter, Gauge and Histogram, telling the /metrics page when they changed.

Each has a ``cache_key()`` (collector/exposition.py's protocol): its own count of changes, bumped after
each change of a value or of the set of series (``labels()`` may add a child, ``remove()`` and ``clear()``
drop some). A labelled metric's children share their parent's count (``labels()`` hands it to the child),
so a child's ``inc()`` moves the parent's key. Between two changes of a metric the page serves the text it
rendered for it, and a change re-renders that metric alone, not every tracked one (an upload moves about
half of them; bench/scrape_latency.py). Each bump follows its change, so a render that read the key before
collecting holds every change counted up to it; a bump lost to a race between threads still moves the
count past what any render read.

A tracked gauge cannot follow a function (``set_function``): its value would change with no call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["TrackedCounter", "TrackedGauge", "TrackedHistogram"]


class _Changes:
    """A metric's change count, shared by the metric and its children."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Tracked:
    """Mixin for a prometheus_client metric: ``labels``, ``remove`` and ``clear`` count as changes."""

    _changes: _Changes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._changes = _Changes()  # a child's is replaced by its parent's in labels()
        super().__init__(*args, **kwargs)

    def cache_key(self) -> int:
        return self._changes.count

    def _changed(self) -> None:
        self._changes.count += 1

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        child = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        child._changes = self._changes
        self._changed()  # a new child is a new series (this costs less than finding out whether it was)
        return child

    def remove(self, *labelvalues: Any) -> None:
        super().remove(*labelvalues)  # type: ignore[misc]
        self._changed()

    def clear(self) -> None:
        super().clear()  # type: ignore[misc]
        self._changed()


class TrackedCounter(_Tracked, Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        self._changed()

    def reset(self) -> None:
        super().reset()
        self._changed()


class TrackedGauge(_Tracked, Gauge):
    def inc(self, amount: float = 1) -> None:
        super().inc(amount)
        self._changed()

    def dec(self, amount: float = 1) -> None:
        super().dec(amount)
        self._changed()

    def set(self, value: float) -> None:
        super().set(value)
        self._changed()

    def set_function(self, f: Any) -> None:
        raise TypeError("a tracked gauge cannot follow a function: use prometheus_client.Gauge")


class TrackedHistogram(_Tracked, Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        self._changed()

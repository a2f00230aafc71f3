"""The collector's in-memory view of recent measurements: what attribution and the metrics read.

Fed on ingest (``add_rows``) and rebuilt from the store on start (``rebuild``). Every row is cheap to add:
a few dictionary updates and an insertion into a list of at most ``recent_measurements`` items. Nothing
is computed per row beyond that; attribution verdicts are recomputed in ``refresh`` only for the
(country, domain, input URL) keys that changed (``dirty``), and at most ``refresh_key_budget`` of them per
call, so that a scrape or an API call never stalls the event loop for long, even right after a rebuild.
Attribution's unit is the input URL; each domain touched by a refresh gets its row rolled up again from
its URLs' rows (``analysis.url_rollup``: interfered with when any of its URLs is).

Thread safety: /metrics renders in a worker thread (collector/exposition.py) while ingest adds rows on the
event loop, so every public method holds one lock. Each holds it briefly: a batch of rows, or one refresh
within its key budget.

What is kept, and why it is enough:
- per (country, domain, input URL, network): the latest ``recent_measurements`` judged measurements (all
  that a network's state depends on), plus the earliest in-window anomaly per fingerprint (for ``first_seen``;
  once that one leaves the window, first_seen becomes the oldest sighting still kept);
- per (country, network): judged and anomalous counts over the window, in time buckets, for the anomaly
  ratio gauges;
- in both, only measurements that speak for their network (``Observation.speaks_for_network``: not AS0,
  not flagged asn_mismatch / cc_mismatch);
- per (country, test, blocking): measurement and anomaly counts of what this process ingested since it
  started, for the counters. Rows read back from the store (the rebuild on start, and rows other collectors
  stored, collector/peer_sync.py) feed the window but are not counted again, so that the counters of
  several collectors on one PostgreSQL add up to the truth, across restarts too (Prometheus handles the
  reset when a collector restarts: ``sum(increase(...))``).

Nothing here identifies a volunteer: rows carry no address and no key.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import threading
import time
from collections.abc import AsyncIterable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from gatewatch.analysis.attribution import (
    AttributionSettings,
    InterferenceRow,
    Observation,
    StoredRow,
    attribute_url,
)
from gatewatch.analysis.url_rollup import roll_up
from gatewatch.core.vocabulary import Scope

from .store.base import StoredMeasurement

__all__ = ["AggregateSnapshot", "InterferenceAggregate", "observation_of"]

P = ParamSpec("P")
R = TypeVar("R")

# Interference scopes that metrics and alerts care about; the others are computed on demand only.
REPORTED_SCOPES: frozenset[Scope] = frozenset({"gateway", "isp"})
# Memory guards against rows an attacker could invent (a free-form test name, endless domains).
MAX_TEST_NAMES = 32
MAX_FINGERPRINTS_PER_NETWORK = 4

_Url = tuple[str, str, str]  # (country, domain, input URL): attribution's unit
_Domain = tuple[str, str]  # (country, domain): the roll-up's unit


@dataclass(slots=True)
class _NetworkHistory:
    recent: list[Observation] = field(default_factory=list)  # judged, oldest first, bounded
    earliest: dict[str | None, Observation] = field(default_factory=dict)  # first anomaly per fingerprint


@dataclass(frozen=True)
class AggregateSnapshot:
    """A consistent picture for one scrape: read-only, replaced (never mutated) by the next refresh."""

    taken_at: datetime
    generation: int  # changes whenever anything in the snapshot may have changed
    # (cc, test_name, blocking) -> (measurements, anomalies) since the aggregate was built
    totals: Mapping[tuple[str, str, str], tuple[int, int]]
    # (cc, asn) -> (judged measurements, anomalies) in the window
    networks: Mapping[tuple[str, str], tuple[int, int]]
    # current gateway and isp verdicts: per domain (rolled up), and per URL
    rows: tuple[InterferenceRow, ...]
    pending: int  # (country, domain, URL) keys whose verdict still waits to be recomputed
    url_rows: tuple[InterferenceRow, ...] = ()


def observation_of(row: StoredRow) -> Observation:
    """The row's observation: a stored row's own (made once for every ingest hook that reads it), else
    made here."""
    return row.observation if isinstance(row, StoredMeasurement) else Observation.from_row(row)


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0]._lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return locked


class InterferenceAggregate:
    def __init__(
        self,
        settings: AttributionSettings | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_interval: float = 5.0,
        prune_interval: float = 60.0,
        refresh_key_budget: int = 1_000,
        bucket_seconds: int = 300,
        max_pairs: int = 1_000_000,
    ) -> None:
        self.settings = settings or AttributionSettings()
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._prune_interval = prune_interval
        self._refresh_key_budget = refresh_key_budget
        self._bucket_seconds = bucket_seconds
        self._max_pairs = max_pairs
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._totals: dict[tuple[str, str, str], list[int]] = {}
        self._histories: dict[_Url, dict[str, _NetworkHistory]] = {}
        self._urls: dict[_Domain, dict[str, None]] = {}  # each domain's URLs with a history
        self._buckets: dict[tuple[str, str], dict[int, list[int]]] = {}
        self._network_totals: dict[tuple[str, str], list[int]] = {}
        self._rows: dict[_Url, InterferenceRow] = {}  # URL rows in REPORTED_SCOPES
        self._domain_rows: dict[_Domain, InterferenceRow] = {}  # their roll-ups
        self._dirty: dict[_Url, None] = {}  # insertion-ordered set: oldest change first
        self._test_names: set[str] = set()
        self._generation = 0
        self._snapshot: AggregateSnapshot | None = None
        self._snapshot_at = float("-inf")
        self._pruned_at = time.monotonic()
        self.dropped_pairs = 0  # rows not tracked because max_pairs was reached

    # -- ingest -------------------------------------------------------------------------------------

    def add_rows(self, rows: Iterable[StoredRow], *, counted: bool = True) -> int:
        """Add stored rows (the store's ``StoredMeasurement``); returns how many. ``counted=False``: rows
        another process ingested (and counts), which feed the window only."""
        now = self._clock()
        oldest = now - self.settings.window
        newest = now + self.settings.max_clock_skew
        observations = [observation_of(row) for row in rows]
        with self._lock:
            for obs in observations:
                self._add(obs, oldest, newest, counted=counted)
            if observations:
                self._generation += 1
        return len(observations)

    def add(self, observation: Observation) -> None:
        now = self._clock()
        with self._lock:
            self._add(observation, now - self.settings.window, now + self.settings.max_clock_skew)
            self._generation += 1

    async def rebuild(self, rows: AsyncIterable[StoredRow], *, yield_every: int = 1_000) -> int:
        """Forget everything and re-read ``rows`` (the store), yielding to the event loop as it goes; then
        recompute every verdict, again in slices, so the first scrape after a start is cheap. The rows feed
        the window, not the counters (they were counted by the process that ingested them)."""
        with self._lock:
            self._reset()
        now = self._clock()
        oldest, newest = now - self.settings.window, now + self.settings.max_clock_skew
        count = 0
        batch: list[Observation] = []
        async for row in rows:
            batch.append(Observation.from_row(row))
            if len(batch) >= yield_every:
                count += self._add_batch(batch, oldest, newest)
                batch = []
                await asyncio.sleep(0)
        count += self._add_batch(batch, oldest, newest)
        while self.pending:
            self.refresh(key_budget=yield_every)
            await asyncio.sleep(0)
        return count

    def _add_batch(self, batch: list[Observation], oldest: datetime, newest: datetime) -> int:
        with self._lock:
            for obs in batch:
                self._add(obs, oldest, newest, counted=False)
            self._generation += 1
        return len(batch)

    def _add(self, obs: Observation, oldest: datetime, newest: datetime, *, counted: bool = True) -> None:
        if counted:
            test = obs.test_name
            if test not in self._test_names:
                if len(self._test_names) >= MAX_TEST_NAMES:
                    test = "other"
                else:
                    self._test_names.add(test)
            total = self._totals.get((obs.probe_cc, test, obs.blocking))
            if total is None:
                total = self._totals[(obs.probe_cc, test, obs.blocking)] = [0, 0]
            total[0] += 1
            total[1] += obs.anomaly
        if not obs.judged or not obs.speaks_for_network or not oldest < obs.seen_at <= newest:
            # Counted, but nothing to say about a network's current state: no verdict, a withheld or
            # contradicted network (attribution would ignore it; the per-network gauges must too), or
            # outside the window.
            return
        self._add_to_network_window(obs)
        pair = (obs.probe_cc, obs.domain, obs.input)
        networks = self._histories.get(pair)
        if networks is None:
            if len(self._histories) >= self._max_pairs:
                self.dropped_pairs += 1
                return
            networks = self._histories[pair] = {}
            self._urls.setdefault((obs.probe_cc, obs.domain), {})[obs.input] = None
        history = networks.get(obs.probe_asn)
        if history is None:
            history = networks[obs.probe_asn] = _NetworkHistory()
        recent = history.recent
        keep = self.settings.recent_measurements
        if len(recent) >= keep and obs.seen_at < recent[0].seen_at:
            changed = False  # older than everything the network's state depends on
        else:
            bisect.insort(recent, obs, key=_seen_at)
            if len(recent) > keep:
                del recent[0]
            changed = True
        if obs.anomaly:
            first = history.earliest.get(obs.fingerprint_key)
            if first is None or obs.seen_at < first.seen_at:
                if first is None and len(history.earliest) >= MAX_FINGERPRINTS_PER_NETWORK:
                    # keep the fingerprints seen most recently: they are the ones rows describe
                    stalest = min(history.earliest, key=lambda k: history.earliest[k].seen_at)
                    del history.earliest[stalest]
                history.earliest[obs.fingerprint_key] = obs
                changed = True
        if changed:
            self._dirty[pair] = None

    def _add_to_network_window(self, obs: Observation) -> None:
        key = (obs.probe_cc, obs.probe_asn)
        bucket = int(obs.seen_at.timestamp()) // self._bucket_seconds
        buckets = self._buckets.setdefault(key, {})
        counts = buckets.get(bucket)
        if counts is None:
            counts = buckets[bucket] = [0, 0]
        counts[0] += 1
        counts[1] += obs.anomaly
        running = self._network_totals.get(key)
        if running is None:
            running = self._network_totals[key] = [0, 0]
        running[0] += 1
        running[1] += obs.anomaly

    # -- window ---------------------------------------------------------------------------------------

    @_locked
    def prune(self, now: datetime | None = None) -> None:
        """Drop what left the window; pairs that lost a measurement get their verdict recomputed."""
        now = now or self._clock()
        oldest = now - self.settings.window
        for pair, networks in list(self._histories.items()):
            changed = False
            for asn, history in list(networks.items()):
                recent = history.recent
                if recent and recent[0].seen_at <= oldest:
                    cut = bisect.bisect_right(recent, oldest, key=_seen_at)
                    del recent[:cut]
                    changed = True
                for key, first in list(history.earliest.items()):
                    if first.seen_at <= oldest:
                        del history.earliest[key]
                        changed = True
                if not recent:
                    del networks[asn]
            if changed:
                self._dirty[pair] = None
            if not networks:
                del self._histories[pair]
                urls = self._urls[pair[:2]]
                del urls[pair[2]]
                if not urls:
                    del self._urls[pair[:2]]
        oldest_bucket = int(oldest.timestamp()) // self._bucket_seconds
        for key, buckets in list(self._buckets.items()):
            running = self._network_totals[key]
            for bucket in [b for b in buckets if b < oldest_bucket]:
                judged, anomalies = buckets.pop(bucket)
                running[0] -= judged
                running[1] -= anomalies
            if not buckets:
                del self._buckets[key]
                del self._network_totals[key]
        self._pruned_at = time.monotonic()
        self._generation += 1

    # -- verdicts -------------------------------------------------------------------------------------

    @_locked
    def refresh(self, now: datetime | None = None, key_budget: int | None = None) -> int:
        """Recompute the verdicts of (at most ``key_budget``) changed pairs; returns how many were done."""
        now = now or self._clock()
        if time.monotonic() - self._pruned_at >= self._prune_interval:
            self.prune(now)
        budget = self._refresh_key_budget if key_budget is None else key_budget
        done = 0
        touched: dict[_Domain, None] = {}
        while self._dirty and done < budget:
            pair = next(iter(self._dirty))
            del self._dirty[pair]
            row = self._compute(pair, now)
            if row is not None and row.scope in REPORTED_SCOPES:
                self._rows[pair] = row
            else:
                self._rows.pop(pair, None)
            touched[pair[:2]] = None
            done += 1
        for domain in touched:
            rolled = self._roll_up(domain, self._rows)
            if rolled is None:
                self._domain_rows.pop(domain, None)
            else:
                self._domain_rows[domain] = rolled
        if done:
            self._generation += 1
        return done

    def _roll_up(self, domain: _Domain, url_rows: Mapping[_Url, InterferenceRow]) -> InterferenceRow | None:
        """The domain's row from the rows of its URLs found in ``url_rows`` (None when there are none)."""
        urls = self._urls.get(domain, {})
        rows = [url_rows[(*domain, url)] for url in urls if (*domain, url) in url_rows]
        return roll_up(rows, len(urls)) if rows else None

    def _compute(self, pair: _Url, now: datetime) -> InterferenceRow | None:
        networks = self._histories.get(pair)
        if not networks:
            return None
        observations: list[Observation] = []
        for history in networks.values():
            observations += history.recent
            # the earliest anomalies only add to first_seen; skip those already among the recent ones
            recent_ids = {id(o) for o in history.recent}
            observations += [o for o in history.earliest.values() if id(o) not in recent_ids]
        cc, domain, url = pair
        return attribute_url(cc, url, observations, now, self.settings, domain=domain)

    @_locked
    def snapshot(self) -> AggregateSnapshot:
        """The picture metrics render: refreshed (within the key budget) at most every refresh_interval."""
        if self._snapshot is None or time.monotonic() - self._snapshot_at >= self._refresh_interval:
            now = self._clock()
            self.refresh(now)
            if self._snapshot is None or self._snapshot.generation != self._generation:
                self._snapshot = AggregateSnapshot(
                    taken_at=now,
                    generation=self._generation,
                    totals={k: (v[0], v[1]) for k, v in self._totals.items()},
                    networks={k: (v[0], v[1]) for k, v in self._network_totals.items() if v[0] > 0},
                    rows=tuple(self._domain_rows[k] for k in sorted(self._domain_rows)),
                    pending=len(self._dirty),
                    url_rows=tuple(self._rows[k] for k in sorted(self._rows)),
                )
            self._snapshot_at = time.monotonic()
        return self._snapshot

    @_locked
    def interference(
        self,
        cc: str | None = None,
        now: datetime | None = None,
        *,
        scopes: Collection[str] | None = None,
        urls: bool = False,
    ) -> list[InterferenceRow]:
        """Attribution rows (all scopes unless ``scopes`` narrows them), for one country or all: one per
        domain (rolled up from its URLs), or with ``urls`` one per input URL.

        Gateway and isp rows for the present come from the maintained verdicts; asking for other scopes,
        or for another ``now``, computes the verdicts of the country's URLs afresh."""
        wanted = frozenset(scopes) if scopes is not None else None
        if now is None and wanted is not None and wanted <= REPORTED_SCOPES:
            at = self._clock()
            self.refresh(at)
            fresh = {p: self._compute(p, at) for p in self._dirty if cc is None or p[0] == cc}
            kept = {p: r for p, r in self._rows.items() if (cc is None or p[0] == cc) and p not in fresh}
            url_rows = {
                p: r for p, r in {**kept, **fresh}.items() if r is not None and r.scope in REPORTED_SCOPES
            }
        else:
            at = now or self._clock()
            pairs = [p for p in self._histories if cc is None or p[0] == cc]
            url_rows = {p: r for p, r in ((p, self._compute(p, at)) for p in pairs) if r is not None}
        if urls:
            rows = [r for _, r in sorted(url_rows.items())]
        else:
            domains = sorted({p[:2] for p in url_rows})
            rows = [r for r in (self._roll_up(d, url_rows) for d in domains) if r is not None]
        return [r for r in rows if wanted is None or r.scope in wanted]

    @property
    def pending(self) -> int:
        return len(self._dirty)


def _seen_at(obs: Observation) -> datetime:
    return obs.seen_at

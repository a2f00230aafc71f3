"""Attribution's per-network half: which stored measurements speak for a network, and each network's state.

A stored measurement becomes an :class:`Observation` through one typed step, :meth:`Observation.from_row`,
which reads what :class:`StoredRow` describes. The collector's ``StoredMeasurement`` is such a row (the
analysis may not import the collector, so it says here what it needs; tests/collector/test_aggregate.py
builds an Observation from a real ``StoredMeasurement`` so that the two cannot drift apart).

Only measurements that can speak for a network count: one whose ASN was withheld (``AS0``, which pools
unrelated networks into one) or whose claimed ASN or country the collector found contradicted by where the
upload came from (flags ``asn_mismatch``, ``cc_mismatch``) is left out of every network's state.

A network's state is its latest judged measurement (so a network that recovered counts as clean and one
that just started being blocked counts as affected), with one deliberate exception: **flapping**. A network
whose recent measurements keep changing between clean and anomalous (at least ``flap_min_transitions``
changes among its last ``recent_measurements``, and not yet settled into a run of ``settle_streak``) is
neither affected nor clean. Two real causes look like this: a middlebox that fails open under load, and a
single bad agent interleaving false reports with an honest agent's in the same network; neither is strong
evidence either way. What the states mean for a country is decided in :mod:`.attribution`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Protocol

from gatewatch.core.measurement import as_utc
from gatewatch.core.vocabulary import MISMATCH_FLAGS, NO_VERDICT, WITHHELD_ASN, NetworkCondition

from .packet_evidence import TraceSighting, sightings_from_payload

__all__ = [
    "AttributionSettings",
    "NetworkState",
    "Observation",
    "StoredRow",
    "network_histories",
    "network_state",
]


class StoredRow(Protocol):
    """What attribution reads of a stored measurement (the collector's ``StoredMeasurement``).

    Read-only properties, so that a frozen dataclass satisfies it."""

    @property
    def measurement_uid(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...  # when the collector received it
    @property
    def measurement_start_time(self) -> datetime: ...  # when the agent says it measured
    @property
    def probe_cc(self) -> str: ...
    @property
    def probe_asn(self) -> str: ...
    @property
    def test_name(self) -> str: ...
    @property
    def input(self) -> str: ...  # the URL measured
    @property
    def domain(self) -> str: ...  # the URL's host
    @property
    def blocking(self) -> str: ...  # the server's verdict as a blocking label ("false", a layer, "null")
    @property
    def anomaly(self) -> bool: ...
    @property
    def technique(self) -> str | None: ...
    @property
    def fingerprint_key(self) -> str | None: ...
    @property
    def flags(self) -> tuple[str, ...]: ...  # e.g. ("asn_mismatch",)


@dataclass(frozen=True, slots=True)
class Observation:
    """One stored measurement, as attribution needs it (nothing that identifies a volunteer)."""

    probe_cc: str
    probe_asn: str
    input: str  # the URL measured: the unit of attribution
    domain: str  # its host: the unit of the roll-up
    test_name: str
    seen_at: datetime  # UTC
    blocking: str  # a blocking label: "false", a blocking layer, or "null" (no verdict)
    anomaly: bool
    technique: str | None
    fingerprint_key: str | None
    measurement_uid: str
    flags: tuple[str, ...] = ()  # the store's flags, e.g. ("asn_mismatch",)
    # Issue 17: the measurement's packet traces, summarised (:mod:`.packet_evidence`); usually empty.
    packet_sightings: tuple[TraceSighting, ...] = ()

    @property
    def judged(self) -> bool:
        """Whether the server reached a verdict (a failed control leaves ``blocking`` null)."""
        return self.blocking != NO_VERDICT

    @property
    def speaks_for_network(self) -> bool:
        """Whether ``probe_asn`` names one network the collector has no reason to doubt: not withheld,
        and neither the ASN nor the country contradicted by where the upload came from."""
        return self.probe_asn != WITHHELD_ASN and MISMATCH_FLAGS.isdisjoint(self.flags)

    @classmethod
    def from_row(cls, row: StoredRow) -> Observation:
        """The observation of a stored measurement.

        ``seen_at`` is the measurement's start time, but never later than when the collector received it,
        so an agent whose clock runs ahead cannot place its measurements in the future (where they would
        outlive the window and always look latest)."""
        seen = min(as_utc(row.measurement_start_time), as_utc(row.received_at))
        return cls(
            probe_cc=row.probe_cc,
            probe_asn=row.probe_asn,
            input=row.input,
            domain=row.domain,
            test_name=row.test_name,
            seen_at=seen,
            blocking=row.blocking,
            anomaly=row.anomaly,
            technique=row.technique,
            fingerprint_key=row.fingerprint_key,
            measurement_uid=row.measurement_uid,
            flags=tuple(row.flags),
            # Issue 17: a row with the signed payload (the collector's) may carry packet traces.
            packet_sightings=sightings_from_payload(getattr(row, "payload", b""), row.probe_asn, seen),
        )


@dataclass(frozen=True)
class AttributionSettings:
    window: timedelta = timedelta(hours=24)
    # insufficient-data below these (per country and domain, judged measurements only)
    min_networks_measured: int = 2
    min_measurements: int = 2
    # gateway: the same fingerprint in at least this many networks ...
    min_networks_gateway: int = 2
    # ... and in at least this share of the networks measured (explained clean networks left out)
    gateway_share: float = 0.6
    # per-network state: how many of its latest judged measurements are looked at
    recent_measurements: int = 6
    flap_min_transitions: int = 3
    settle_streak: int = 3
    # networks known to bypass the national gateway (own international transit), e.g. {"AS64999"}
    exempt_asns: frozenset[str] = frozenset()
    # measurements claiming to be from further in the future than this are ignored
    max_clock_skew: timedelta = timedelta(minutes=10)
    max_examples: int = 3

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.min_networks_gateway < 2:
            # One network can never show that interference is shared: that is the poisoned-network guard.
            raise ValueError("min_networks_gateway must be at least 2")
        if not 0.0 < self.gateway_share <= 1.0:
            raise ValueError("gateway_share must be in (0, 1]")
        if self.recent_measurements < 1 or self.settle_streak < 1 or self.flap_min_transitions < 1:
            raise ValueError("recent_measurements, settle_streak and flap_min_transitions must be positive")


@dataclass(frozen=True, slots=True)
class NetworkState:
    asn: str
    condition: NetworkCondition
    measurements: int  # judged measurements the state rests on: the latest, at most recent_measurements
    last_measured: datetime
    fingerprint_key: str | None = None  # affected only
    technique: str | None = None  # affected only
    since: datetime | None = None  # affected only: start of the current anomalous run, as far as seen


def network_histories(
    cc: str, url: str, observations: Iterable[Observation], now: datetime, settings: AttributionSettings
) -> dict[str, list[Observation]]:
    """Per network, its judged measurements of the input ``url`` in ``cc`` that speak for it and fall in the
    window ending at ``now`` (plus the allowed clock skew), oldest first.

    The unit is the URL, not its domain: ``http://`` and ``https://`` of one host (or two paths) can be
    treated differently by a censor, and the latest measurement of one must not hide the other's state."""
    now = as_utc(now)
    oldest, newest = now - settings.window, now + settings.max_clock_skew
    by_network: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        if (
            obs.probe_cc == cc
            and obs.input == url
            and obs.judged
            and obs.speaks_for_network
            and oldest < obs.seen_at <= newest
        ):
            by_network[obs.probe_asn].append(obs)
    for series in by_network.values():
        series.sort(key=lambda o: (o.seen_at, o.measurement_uid))
    return by_network


def network_state(
    asn: str, observations: Sequence[Observation], settings: AttributionSettings
) -> NetworkState:
    """The current state of one network from its judged, in-window measurements (sorted oldest first)."""
    recent = observations[-settings.recent_measurements :]
    latest = recent[-1]
    transitions = sum(1 for a, b in pairwise(recent) if a.anomaly != b.anomaly)
    tail = 1
    while tail < len(recent) and recent[-tail - 1].anomaly == latest.anomaly:
        tail += 1
    if transitions >= settings.flap_min_transitions and tail < settings.settle_streak:
        return NetworkState(asn, "flapping", len(recent), latest.seen_at)
    if not latest.anomaly:
        return NetworkState(asn, "clean", len(recent), latest.seen_at)
    # The fingerprint of the current anomalous run: its most common one, the latest breaking a tie.
    run = recent[-tail:]
    counts = Counter(o.fingerprint_key for o in run)
    best = max(range(len(run)), key=lambda i: (counts[run[i].fingerprint_key], i))
    chosen = run[best]
    return NetworkState(
        asn, "affected", len(recent), latest.seen_at, chosen.fingerprint_key, chosen.technique, run[0].seen_at
    )

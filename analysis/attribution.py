"""Gateway or ISP? The scope of interference seen in one country (pure: records in, verdicts out).

For each (country, domain) over a sliding window, every network (ASN) that measured the domain gets a
*current state* from its own recent measurements, and a rule table turns the set of states into one scope:

- ``gateway``: the same fingerprint (same injected answers, same blockpage, same failure at the same stage)
  in at least ``min_networks_gateway`` networks and in at least ``gateway_share`` of the networks measured,
  with no clean network unless that is explained. Uniform behaviour shows central control; it does not
  prove a single chokepoint, which is what ``packet_evidence`` is kept open for.
- ``isp``: interference confined to some networks, or different fingerprints in different networks.
- ``none``: every network is currently clean.
- ``insufficient-data``: too few networks or measurements to say.

Per network, the state is its latest judged measurement (so a network that recovered counts as clean and
one that just started being blocked counts as affected), with one deliberate exception: **flapping**. A
network whose recent measurements keep changing between clean and anomalous (at least
``flap_min_transitions`` changes among its last ``recent_measurements``, and not yet settled into a run of
``settle_streak``) is neither affected nor clean. It is still counted as measured, so it lowers the share
a gateway verdict needs, but it cannot make a verdict and cannot veto one. Two real causes look like this:
a middlebox that fails open under load, and a single bad agent interleaving false reports with an honest
agent's in the same network; neither is strong evidence either way.

A clean network is *explained* (and so does not veto a gateway verdict) when it has not been measured since
the current episode of the interference began (its cleanliness may simply be stale), or when the operator
lists it in ``exempt_asns`` (a network known to have its own international link that bypasses the
gateway). The episode's start is the earliest start of the current anomalous run among the networks
sharing the fingerprint, looking only at the measurements their states rest on (the last
``recent_measurements``): for a run longer than that, the start reads later than it was.

Only measurements that can speak for a network count: one whose ASN was withheld (``AS0``, which pools
unrelated networks into one) or whose claimed ASN or country the collector found contradicted by where the
upload came from (flags ``asn_mismatch``, ``cc_mismatch``) is left out of every network's state. Such
measurements are still stored and exported; they just cannot make or veto a scope verdict.

A single network can never produce ``gateway``: with the default settings it takes two networks showing
the same fingerprint, so one poisoned network (or one bad agent) makes at most an ``isp`` row.

Rule ids are stable (researchers and alerts key on them): never rename one, add a new one instead.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

__all__ = [
    "MISMATCH_FLAGS",
    "RULES",
    "WITHHELD_ASN",
    "AttributionSettings",
    "InterferenceRow",
    "NetworkState",
    "Observation",
    "Rule",
    "Scope",
    "attribute",
    "attribute_domain",
    "network_state",
]

Scope = Literal["gateway", "isp", "none", "insufficient-data"]
NetworkCondition = Literal["affected", "clean", "flapping"]

# blocking as the store keeps it: the server's verdict flattened to text.
NO_VERDICT = "null"
# OONI's withheld ASN: not a network, but every network whose volunteers chose not to say.
WITHHELD_ASN = "AS0"
# The collector's flags for claims that disagree with the upload's own origin.
MISMATCH_FLAGS = frozenset({"asn_mismatch", "cc_mismatch"})


@dataclass(frozen=True, slots=True)
class Observation:
    """One stored measurement, as attribution needs it (nothing that identifies a volunteer)."""

    probe_cc: str
    probe_asn: str
    domain: str
    test_name: str
    seen_at: datetime  # UTC
    blocking: str  # "false" | "dns" | "tcp_ip" | "http-failure" | "http-diff" | "null"
    anomaly: bool
    technique: str | None
    fingerprint_key: str | None
    measurement_uid: str
    flags: tuple[str, ...] = ()  # the store's flags, e.g. ("asn_mismatch",)

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
    def from_row(cls, row: Any) -> Observation:
        """From any object with the store row's attributes (``StoredMeasurement`` or similar).

        ``seen_at`` is taken from the row when it has one; otherwise it is the measurement's start time, but
        never later than when the collector received it, so an agent whose clock runs ahead cannot place
        its measurements in the future (where they would outlive the window and always look latest)."""
        seen = getattr(row, "seen_at", None)
        if seen is None:
            seen = row.measurement_start_time
            received = getattr(row, "received_at", None)
            if received is not None and _utc(received) < _utc(seen):
                seen = received
        blocking = row.blocking
        if blocking is False:
            blocking = "false"
        elif blocking is None:
            blocking = NO_VERDICT
        anomaly = getattr(row, "anomaly", None)
        if anomaly is None:
            anomaly = blocking not in ("false", NO_VERDICT)
        return cls(
            probe_cc=row.probe_cc,
            probe_asn=row.probe_asn,
            domain=row.domain,
            test_name=row.test_name,
            seen_at=_utc(seen),
            blocking=str(blocking),
            anomaly=bool(anomaly),
            technique=row.technique,
            fingerprint_key=row.fingerprint_key,
            measurement_uid=row.measurement_uid,
            flags=tuple(getattr(row, "flags", None) or ()),
        )


def _utc(value: datetime) -> datetime:
    # Stores hand back aware times; a naive one is taken to be UTC rather than local time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
class Rule:
    rule_id: str
    scope: Scope
    meaning: str


RULES: Mapping[str, Rule] = {
    rule.rule_id: rule
    for rule in (
        Rule(
            "scope.insufficient.measurements",
            "insufficient-data",
            "too few judged measurements in the window",
        ),
        Rule("scope.insufficient.networks", "insufficient-data", "too few networks measured in the window"),
        Rule("scope.none.all_clean", "none", "every network measured is currently clean"),
        Rule(
            "scope.insufficient.flapping",
            "insufficient-data",
            "interference appears only in networks that keep flapping between clean and anomalous",
        ),
        Rule(
            "scope.gateway.same_fingerprint",
            "gateway",
            "the same fingerprint in enough networks and in a large share of those measured, "
            "and no unexplained clean network",
        ),
        Rule("scope.isp.single_network", "isp", "interference in one network only"),
        Rule(
            "scope.isp.no_shared_fingerprint",
            "isp",
            "no fingerprint is shared by enough networks: networks see different interference",
        ),
        Rule(
            "scope.isp.clean_networks",
            "isp",
            "a shared fingerprint, but networks measured since it appeared are clean: confined to some",
        ),
        Rule(
            "scope.isp.low_share",
            "isp",
            "a shared fingerprint, but in too small a share of the networks measured",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class NetworkState:
    asn: str
    condition: NetworkCondition
    measurements: int  # judged measurements the state rests on: the latest, at most recent_measurements
    last_measured: datetime
    fingerprint_key: str | None = None  # affected only
    technique: str | None = None  # affected only
    since: datetime | None = None  # affected only: start of the current anomalous run, as far as seen


@dataclass(frozen=True)
class InterferenceRow:
    cc: str
    domain: str
    scope: Scope
    rule_id: str
    evidence: str
    technique: str | None
    fingerprint_key: str | None
    networks_affected: int
    networks_measured: int
    first_seen: datetime | None  # the interference this row describes, within the window
    last_seen: datetime | None
    example_measurement_uids: tuple[str, ...]
    networks: tuple[NetworkState, ...] = ()
    # Left open for the localisation work (where on the path the tampering happens): always None here.
    packet_evidence: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ``2026-11-23T13:40:00Z``), as GET /api/v1/interference serves it."""
        return {
            "cc": self.cc,
            "domain": self.domain,
            "scope": self.scope,
            "rule_id": self.rule_id,
            "evidence": self.evidence,
            "technique": self.technique,
            "fingerprint_key": self.fingerprint_key,
            "networks_affected": self.networks_affected,
            "networks_measured": self.networks_measured,
            "first_seen": _format(self.first_seen),
            "last_seen": _format(self.last_seen),
            "example_measurement_uids": list(self.example_measurement_uids),
            "networks": [
                {
                    "asn": n.asn,
                    "condition": n.condition,
                    "measurements": n.measurements,
                    "last_measured": _format(n.last_measured),
                    "fingerprint_key": n.fingerprint_key,
                    "technique": n.technique,
                }
                for n in self.networks
            ],
            "packet_evidence": self.packet_evidence,
        }


def _format(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def attribute(
    observations: Iterable[Observation], now: datetime, settings: AttributionSettings | None = None
) -> list[InterferenceRow]:
    """One row per (country, domain) found in ``observations``, sorted by country then domain."""
    settings = settings or AttributionSettings()
    grouped: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        grouped[(obs.probe_cc, obs.domain)].append(obs)
    return [attribute_domain(cc, domain, obs, now, settings) for (cc, domain), obs in sorted(grouped.items())]


def attribute_domain(
    cc: str,
    domain: str,
    observations: Iterable[Observation],
    now: datetime,
    settings: AttributionSettings | None = None,
) -> InterferenceRow:
    """The scope verdict for one (country, domain) from its measurements (any order; others are ignored)."""
    settings = settings or AttributionSettings()
    now = _utc(now)
    oldest, newest = now - settings.window, now + settings.max_clock_skew
    by_network: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        if (
            obs.probe_cc == cc
            and obs.domain == domain
            and obs.judged
            and obs.speaks_for_network
            and oldest < obs.seen_at <= newest
        ):
            by_network[obs.probe_asn].append(obs)
    for series in by_network.values():
        series.sort(key=lambda o: (o.seen_at, o.measurement_uid))
    states = tuple(network_state(asn, by_network[asn], settings) for asn in sorted(by_network))
    return _decide(cc, domain, states, by_network, settings)


def _decide(
    cc: str,
    domain: str,
    states: tuple[NetworkState, ...],
    by_network: Mapping[str, list[Observation]],
    settings: AttributionSettings,
) -> InterferenceRow:
    measured = len(states)
    total = sum(s.measurements for s in states)
    affected = [s for s in states if s.condition == "affected"]
    flapping = [s for s in states if s.condition == "flapping"]
    clean = [s for s in states if s.condition == "clean"]

    def row(
        rule_id: str, evidence: str, involved: Sequence[NetworkState], key: str | None = None
    ) -> InterferenceRow:
        return _row(cc, domain, rule_id, evidence, states, involved, key, by_network, settings)

    if total < settings.min_measurements:
        return row(
            "scope.insufficient.measurements", f"{total} judged measurement(s) in the window", affected
        )
    if measured < settings.min_networks_measured:
        return row("scope.insufficient.networks", f"{measured} network(s) measured in the window", affected)
    if not affected:
        if flapping:
            return row(
                "scope.insufficient.flapping",
                f"{len(flapping)} of {measured} networks flap; none is steadily affected",
                flapping,
            )
        return row("scope.none.all_clean", f"all {measured} networks measured are currently clean", ())

    # Networks showing the same interference. An anomaly without a fingerprint cannot be shown to be the
    # same as another one, so each such network stands alone.
    groups: dict[str, list[NetworkState]] = defaultdict(list)
    for state in affected:
        groups[state.fingerprint_key or f"unfingerprinted:{state.asn}"].append(state)
    key, sharing = max(groups.items(), key=lambda item: (len(item[1]), max(s.last_measured for s in item[1])))
    shared_key = None if key.startswith("unfingerprinted:") else key
    # When this episode began, as far as the sharing networks' recent measurements show (an earlier
    # episode, before a recovery, does not count: a network measured clean in between is not a witness).
    onset = min(s.since or s.last_measured for s in sharing)
    explained = [s for s in clean if s.last_measured < onset or s.asn in settings.exempt_asns]
    unexplained = [s for s in clean if s not in explained]
    denominator = measured - len(explained)
    share = len(sharing) / denominator if denominator else 0.0
    summary = (
        f"fingerprint {shared_key or 'none'} ({sharing[0].technique or 'unknown technique'}) in "
        f"{len(sharing)} of {measured} networks measured ({_asns(sharing)})"
    )
    if shared_key is not None and len(sharing) >= settings.min_networks_gateway and not unexplained:
        if share >= settings.gateway_share:
            notes = []
            if explained:
                notes.append(f"clean but explained (stale or exempt): {_asns(explained)}")
            if flapping:
                notes.append(f"flapping: {_asns(flapping)}")
            others = [s for s in affected if s not in sharing]
            if others:
                notes.append(f"other interference: {_asns(others)}")
            note = "; ".join(notes) if notes else "no clean network"
            return row("scope.gateway.same_fingerprint", f"{summary}; {note}", sharing, shared_key)
    if len(affected) == 1:
        return row(
            "scope.isp.single_network",
            f"{summary}; {len(clean)} clean, {len(flapping)} flapping",
            affected,
            shared_key,
        )
    if shared_key is None or len(sharing) < settings.min_networks_gateway:
        distinct = len(groups)
        return row(
            "scope.isp.no_shared_fingerprint",
            f"{len(affected)} networks affected with {distinct} different fingerprints ({_asns(affected)})",
            affected,
            shared_key,
        )
    if unexplained:
        return row(
            "scope.isp.clean_networks",
            f"{summary}; clean since it appeared: {_asns(unexplained)}",
            affected,
            shared_key,
        )
    return row(
        "scope.isp.low_share",
        f"{summary}: share {share:.2f} is below {settings.gateway_share:.2f}",
        affected,
        shared_key,
    )


def _row(
    cc: str,
    domain: str,
    rule_id: str,
    evidence: str,
    states: tuple[NetworkState, ...],
    involved: Sequence[NetworkState],
    key: str | None,
    by_network: Mapping[str, list[Observation]],
    settings: AttributionSettings,
) -> InterferenceRow:
    rule = RULES[rule_id]
    involved_asns = {s.asn for s in involved}
    # The sightings this row is about: anomalies of the involved networks, restricted to the row's
    # fingerprint when it has one (a gateway row is about that fingerprint only).
    sightings = sorted(
        (
            o
            for asn in involved_asns
            for o in by_network[asn]
            if o.anomaly and (key is None or rule.scope != "gateway" or o.fingerprint_key == key)
        ),
        key=lambda o: o.seen_at,
    )
    if rule.scope in ("gateway", "isp"):
        examples = sightings
    else:  # nothing to point at but the latest measurements themselves
        examples = sorted((o for obs in by_network.values() for o in obs), key=lambda o: o.seen_at)
    technique = None
    if rule.scope in ("gateway", "isp") and sightings:
        keyed = [o for o in sightings if o.fingerprint_key == key] or sightings
        technique = keyed[-1].technique
    return InterferenceRow(
        cc=cc,
        domain=domain,
        scope=rule.scope,
        rule_id=rule_id,
        evidence=evidence,
        technique=technique,
        fingerprint_key=key if rule.scope in ("gateway", "isp") else None,
        networks_affected=len(involved) if rule.scope in ("gateway", "isp") else 0,
        networks_measured=len(states),
        first_seen=sightings[0].seen_at if sightings else None,
        last_seen=sightings[-1].seen_at if sightings else None,
        example_measurement_uids=tuple(
            o.measurement_uid for o in reversed(examples[-settings.max_examples :])
        ),
        networks=states,
    )


def _asns(states: Iterable[NetworkState]) -> str:
    return ", ".join(s.asn for s in states)

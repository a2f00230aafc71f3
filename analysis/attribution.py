"""Gateway or ISP? The scope of interference seen in one country (pure: records in, verdicts out).

For each (country, input URL) over a sliding window, every network (ASN) that measured the URL gets a
*current state* from its own recent measurements (affected, clean or flapping: :mod:`.networks`), and a
rule table turns the set of states into one scope:

- ``gateway``: the same fingerprint (same injected answers, same blockpage, same failure at the same stage)
  in at least ``min_networks_gateway`` networks and in at least ``gateway_share`` of the networks measured,
  with no clean network unless that is explained. Uniform behaviour shows central control; it does not
  prove a single chokepoint, which is what ``packet_evidence`` is kept open for.
- ``isp``: interference confined to some networks, or different fingerprints in different networks.
- ``none``: every network is currently clean.
- ``insufficient-data``: too few networks or measurements to say.

Each domain also gets a row rolled up from its URLs' rows (:mod:`.url_rollup`: interfered with when any
of its URLs is): ``attribute`` and ``attribute_domain`` answer with those, ``attribute_urls`` and
``attribute_url`` with the URL rows.

A flapping network is still counted as measured, so it lowers the share a gateway verdict needs, but it
cannot make a verdict and cannot veto one.

A clean network is *explained* (and so does not veto a gateway verdict) when it has not been measured since
the current episode of the interference began (its cleanliness may simply be stale), or when the operator
lists it in ``exempt_asns`` (a network known to have its own international link that bypasses the
gateway). The episode's start is the earliest start of the current anomalous run among the networks
sharing the fingerprint, looking only at the measurements their states rest on (the last
``recent_measurements``): for a run longer than that, the start reads later than it was.

Only measurements that can speak for a network count (:attr:`.Observation.speaks_for_network`: not a
withheld ``AS0``, not flagged ``asn_mismatch`` or ``cc_mismatch``). The others are still stored and
exported; they just cannot make or veto a scope verdict.

A single network can never produce ``gateway``: with the default settings it takes two networks showing
the same fingerprint, so one poisoned network (or one bad agent) makes at most an ``isp`` row.

Each rule's decision is one function below (``_gateway``, ``_single_network``, ...); ``_decide`` tries them
in order of precedence. Rule ids are stable (researchers and alerts key on them): never rename one, add a
new one instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gatewatch.core.vocabulary import NetworkCondition, Scope

from .attribution_rules import RULES, Rule
from .networks import (
    AttributionSettings,
    NetworkState,
    Observation,
    StoredRow,
    network_histories,
    network_state,
)
from .packet_evidence import judge_packet_evidence
from .url_rollup import INTERFERENCE_SCOPES, roll_up

__all__ = [
    "RULES",
    "AttributionSettings",
    "InterferenceRow",
    "NetworkCondition",
    "NetworkState",
    "Observation",
    "Rule",
    "Scope",
    "StoredRow",
    "attribute",
    "attribute_domain",
    "attribute_url",
    "attribute_urls",
    "network_state",
]


@dataclass(frozen=True)
class InterferenceRow:
    """One (country, input URL) decision, or a domain's roll-up of them (``input`` None). GET
    /api/v1/interference serves it as :class:`gatewatch.core.wire.InterferenceRow`."""

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
    # Where on the path the tampering happens, from the agents' packet traces (:mod:`.packet_evidence`);
    # None when no agent traced the domain.
    packet_evidence: dict[str, Any] | None = field(default=None)
    input: str | None = None  # the URL this row decides; None on a domain's roll-up
    decided_by: str | None = None  # the URL whose row this is (a roll-up: the domain's most serious URL)
    urls_measured: int = 1  # the domain's URLs measured in the window (a URL row: 1)
    urls_affected: int = 0  # of those, the ones with gateway- or isp-level interference


def attribute(
    observations: Iterable[Observation], now: datetime, settings: AttributionSettings | None = None
) -> list[InterferenceRow]:
    """One roll-up row per (country, domain) found in ``observations``, sorted by country then domain."""
    by_domain: dict[tuple[str, str], list[InterferenceRow]] = defaultdict(list)
    for row in attribute_urls(observations, now, settings):
        by_domain[(row.cc, row.domain)].append(row)
    return [roll_up(rows) for _, rows in sorted(by_domain.items())]


def attribute_urls(
    observations: Iterable[Observation], now: datetime, settings: AttributionSettings | None = None
) -> list[InterferenceRow]:
    """One row per (country, input URL) found in ``observations``, sorted by country, domain, URL."""
    settings = settings or AttributionSettings()
    grouped: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        grouped[(obs.probe_cc, obs.domain, obs.input)].append(obs)
    return [
        attribute_url(cc, url, obs, now, settings, domain=domain)
        for (cc, domain, url), obs in sorted(grouped.items())
    ]


def attribute_domain(
    cc: str,
    domain: str,
    observations: Iterable[Observation],
    now: datetime,
    settings: AttributionSettings | None = None,
) -> InterferenceRow:
    """The scope verdict for one (country, domain), rolled up from its URLs' verdicts (any order; other
    measurements are ignored)."""
    settings = settings or AttributionSettings()
    observations = list(observations)
    urls = sorted({o.input for o in observations if o.probe_cc == cc and o.domain == domain}) or [domain]
    return roll_up(attribute_url(cc, url, observations, now, settings, domain=domain) for url in urls)


def attribute_url(
    cc: str,
    url: str,
    observations: Iterable[Observation],
    now: datetime,
    settings: AttributionSettings | None = None,
    *,
    domain: str | None = None,
) -> InterferenceRow:
    """The scope verdict for one (country, input URL) from its measurements (any order; others are ignored).

    ``domain`` is the URL's host as the store keeps it (by default read from the measurements)."""
    settings = settings or AttributionSettings()
    by_network = network_histories(cc, url, observations, now, settings)
    states = tuple(network_state(asn, by_network[asn], settings) for asn in sorted(by_network))
    if domain is None:
        domain = next((o.domain for obs in by_network.values() for o in obs), url)
    traced = (s for obs in by_network.values() for o in obs for s in o.packet_sightings)
    evidence = judge_packet_evidence(traced)
    decision = _refined_by_packets(_decide(states, settings), evidence)
    row = _row(cc, domain, decision, states, by_network, settings, evidence)
    return replace(row, input=url, decided_by=url, urls_affected=int(row.scope in INTERFERENCE_SCOPES))


# --- the decision ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Decision:
    rule_id: str
    evidence: str
    involved: Sequence[NetworkState]  # the networks the row is about
    key: str | None = None  # the fingerprint the row is about


@dataclass(frozen=True, slots=True)
class _Tally:
    """The networks' states, by condition."""

    states: tuple[NetworkState, ...]
    affected: list[NetworkState]
    flapping: list[NetworkState]
    clean: list[NetworkState]

    @classmethod
    def of(cls, states: tuple[NetworkState, ...]) -> _Tally:
        def having(condition: NetworkCondition) -> list[NetworkState]:
            return [s for s in states if s.condition == condition]

        return cls(states, having("affected"), having("flapping"), having("clean"))

    @property
    def measured(self) -> int:
        return len(self.states)

    @property
    def measurements(self) -> int:
        return sum(s.measurements for s in self.states)


@dataclass(frozen=True, slots=True)
class _Shared:
    """The interference shared by the most affected networks, and the clean networks that stand against it."""

    key: str | None  # its fingerprint; None when the largest group is one unfingerprinted network
    sharing: list[NetworkState]
    fingerprints: int  # distinct interferences among the affected networks
    explained: list[NetworkState]  # clean, but stale or exempt: no veto
    unexplained: list[NetworkState]  # clean since the interference appeared
    share: float  # of the networks measured, explained clean ones left out
    summary: str

    @classmethod
    def of(cls, tally: _Tally, settings: AttributionSettings) -> _Shared:
        # An anomaly without a fingerprint cannot be shown to be the same as another one, so each such
        # network stands alone.
        groups: dict[str, list[NetworkState]] = defaultdict(list)
        for state in tally.affected:
            groups[state.fingerprint_key or f"unfingerprinted:{state.asn}"].append(state)
        key, sharing = max(
            groups.items(), key=lambda item: (len(item[1]), max(s.last_measured for s in item[1]))
        )
        shared_key = None if key.startswith("unfingerprinted:") else key
        # When this episode began, as far as the sharing networks' recent measurements show (an earlier
        # episode, before a recovery, does not count: a network measured clean in between is not a witness).
        onset = min(s.since or s.last_measured for s in sharing)
        explained = [s for s in tally.clean if s.last_measured < onset or s.asn in settings.exempt_asns]
        denominator = tally.measured - len(explained)
        summary = (
            f"fingerprint {shared_key or 'none'} ({sharing[0].technique or 'unknown technique'}) in "
            f"{len(sharing)} of {tally.measured} networks measured ({_asns(sharing)})"
        )
        return cls(
            key=shared_key,
            sharing=sharing,
            fingerprints=len(groups),
            explained=explained,
            unexplained=[s for s in tally.clean if s not in explained],
            share=len(sharing) / denominator if denominator else 0.0,
            summary=summary,
        )

    def in_enough_networks(self, settings: AttributionSettings) -> bool:
        return self.key is not None and len(self.sharing) >= settings.min_networks_gateway


def _decide(states: tuple[NetworkState, ...], settings: AttributionSettings) -> _Decision:
    """The first rule that applies, in order of precedence."""
    tally = _Tally.of(states)
    early = (
        _too_few_measurements(tally, settings)
        or _too_few_networks(tally, settings)
        or _no_steady_interference(tally)
    )
    if early is not None:
        return early
    shared = _Shared.of(tally, settings)
    return (
        _gateway(tally, shared, settings)
        or _single_network(tally, shared)
        or _no_shared_fingerprint(tally, shared, settings)
        or _clean_networks(tally, shared)
        or _low_share(tally, shared, settings)
    )


def _too_few_measurements(tally: _Tally, settings: AttributionSettings) -> _Decision | None:
    if tally.measurements >= settings.min_measurements:
        return None
    evidence = f"{tally.measurements} judged measurement(s) in the window"
    return _Decision("scope.insufficient.measurements", evidence, tally.affected)


def _too_few_networks(tally: _Tally, settings: AttributionSettings) -> _Decision | None:
    if tally.measured >= settings.min_networks_measured:
        return None
    return _Decision(
        "scope.insufficient.networks", f"{tally.measured} network(s) measured in the window", tally.affected
    )


def _no_steady_interference(tally: _Tally) -> _Decision | None:
    """No network is affected: all clean, or the only interference is in networks that flap."""
    if tally.affected:
        return None
    if tally.flapping:
        evidence = f"{len(tally.flapping)} of {tally.measured} networks flap; none is steadily affected"
        return _Decision("scope.insufficient.flapping", evidence, tally.flapping)
    return _Decision(
        "scope.none.all_clean", f"all {tally.measured} networks measured are currently clean", ()
    )


def _gateway(tally: _Tally, shared: _Shared, settings: AttributionSettings) -> _Decision | None:
    """The same fingerprint in enough networks and a large enough share of them, and no clean network
    that is not explained."""
    if not shared.in_enough_networks(settings) or shared.unexplained or shared.share < settings.gateway_share:
        return None
    notes = []
    if shared.explained:
        notes.append(f"clean but explained (stale or exempt): {_asns(shared.explained)}")
    if tally.flapping:
        notes.append(f"flapping: {_asns(tally.flapping)}")
    others = [s for s in tally.affected if s not in shared.sharing]
    if others:
        notes.append(f"other interference: {_asns(others)}")
    note = "; ".join(notes) if notes else "no clean network"
    return _Decision(
        "scope.gateway.same_fingerprint", f"{shared.summary}; {note}", shared.sharing, shared.key
    )


def _single_network(tally: _Tally, shared: _Shared) -> _Decision | None:
    if len(tally.affected) != 1:
        return None
    evidence = f"{shared.summary}; {len(tally.clean)} clean, {len(tally.flapping)} flapping"
    return _Decision("scope.isp.single_network", evidence, tally.affected, shared.key)


def _no_shared_fingerprint(tally: _Tally, shared: _Shared, settings: AttributionSettings) -> _Decision | None:
    if shared.in_enough_networks(settings):
        return None
    evidence = (
        f"{len(tally.affected)} networks affected with {shared.fingerprints} different fingerprints "
        f"({_asns(tally.affected)})"
    )
    return _Decision("scope.isp.no_shared_fingerprint", evidence, tally.affected, shared.key)


def _clean_networks(tally: _Tally, shared: _Shared) -> _Decision | None:
    if not shared.unexplained:
        return None
    evidence = f"{shared.summary}; clean since it appeared: {_asns(shared.unexplained)}"
    return _Decision("scope.isp.clean_networks", evidence, tally.affected, shared.key)


def _low_share(tally: _Tally, shared: _Shared, settings: AttributionSettings) -> _Decision:
    evidence = f"{shared.summary}: share {shared.share:.2f} is below {settings.gateway_share:.2f}"
    return _Decision("scope.isp.low_share", evidence, tally.affected, shared.key)


# --- the row --------------------------------------------------------------------------------------------


def _refined_by_packets(decision: _Decision, evidence: dict[str, Any] | None) -> _Decision:
    """Packet evidence weighs in only where the agents traced (``evidence`` from
    :func:`.packet_evidence.judge_packet_evidence`), and only where content cannot tell: networks that see
    different blockpages or failures but one injector (one box on the shared path that several ISPs'
    traffic crosses) are the gateway; one fingerprint everywhere but different injectors (another IP ID,
    TTL or window, or another distance before the server) is one list applied by several boxes: the ISPs.
    A single located network, or none, changes nothing."""
    supports = evidence.get("supports") if evidence else None
    if evidence is None or supports is None:
        return decision
    said = f"{decision.evidence}; packet traces: {evidence['summary']}"
    if supports == "gateway" and decision.rule_id == "scope.isp.no_shared_fingerprint":
        return _Decision("scope.gateway.same_injector", said, decision.involved)
    if supports == "isp" and decision.rule_id == "scope.gateway.same_fingerprint":
        return _Decision("scope.isp.different_injectors", said, decision.involved, decision.key)
    return decision


def _row(
    cc: str,
    domain: str,
    decision: _Decision,
    states: tuple[NetworkState, ...],
    by_network: Mapping[str, list[Observation]],
    settings: AttributionSettings,
    packet_evidence: dict[str, Any] | None = None,
) -> InterferenceRow:
    rule = RULES[decision.rule_id]
    key, involved = decision.key, decision.involved
    interference = rule.scope in ("gateway", "isp")  # the row says where interference is
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
    if interference:
        examples = sightings
    else:  # nothing to point at but the latest measurements themselves
        examples = sorted((o for obs in by_network.values() for o in obs), key=lambda o: o.seen_at)
    technique = None
    if interference and sightings:
        keyed = [o for o in sightings if o.fingerprint_key == key] or sightings
        technique = keyed[-1].technique
    return InterferenceRow(
        cc=cc,
        domain=domain,
        scope=rule.scope,
        rule_id=decision.rule_id,
        evidence=decision.evidence,
        technique=technique,
        fingerprint_key=key if interference else None,
        networks_affected=len(involved) if interference else 0,
        networks_measured=len(states),
        first_seen=sightings[0].seen_at if sightings else None,
        last_seen=sightings[-1].seen_at if sightings else None,
        example_measurement_uids=tuple(
            o.measurement_uid for o in reversed(examples[-settings.max_examples :])
        ),
        networks=states,
        packet_evidence=packet_evidence,  # issue 17: analysis/packet_evidence.py
    )


def _asns(states: Iterable[NetworkState]) -> str:
    return ", ".join(s.asn for s in states)

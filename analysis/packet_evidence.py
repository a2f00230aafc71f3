"""Packet-level evidence of *where* interference happens, across networks (pure: traces in, a summary out).

The agent's optional trace step (:mod:`gatewatch.probes.packet_trace`) records, for an interfered flow,
the hop at which an answer to the trigger starts (nearer than the server: an injector on the path) and the
injected packet's headers. Across the networks of a country, for one domain:

- ``packet.gateway.same_injector``: two or more networks located an injector, with the same packet
  signature (IP ID, estimated initial TTL, DF, TCP window and flags) at the same distance before the server.
  One box on the shared path: this strengthens ``gateway``.
- ``packet.isp.different_injectors``: injectors located in two or more networks, but with different
  signatures or at different distances from the server: separate boxes, which points to ``isp``.
- ``packet.single_network``: an injector located in one network only: nothing to compare yet.
- ``packet.no_injector``: traces were made but found no injected answer on the path (a resolver's own
  answer, a blackhole): the tampering is not an on-path injection.

The distance compared is the one *before the server* (control hop minus injection hop), not the distance
from the volunteer: two ISPs reach the same national gateway after different numbers of their own hops.
The initial TTL is estimated as the arrival TTL plus the routers crossed back (injection hop - 1).
Rule ids are stable (never renamed). Nothing here carries an address: traces have none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from gatewatch.core.vocabulary import TRACE_DONE

__all__ = [
    "PACKET_RULES",
    "InjectorSignature",
    "TraceSighting",
    "judge_packet_evidence",
    "sightings_from_payload",
]

PACKET_RULES: dict[str, str] = {
    "packet.gateway.same_injector": "the same injected-packet signature at the same distance from the server "
    "in two or more networks: one injector on the shared path",
    "packet.isp.different_injectors": "injected packets with different signatures or at different distances "
    "from the server in different networks: separate injectors",
    "packet.single_network": "an injector located in one network only",
    "packet.no_injector": "traces found no injected answer on the path",
}
_MARKER = b'"packet_traces":[{'  # a payload without it has no trace to read (most of them)
MAX_SIGHTINGS_SHOWN = 16


@dataclass(frozen=True, slots=True)
class InjectorSignature:
    ip_id: int
    initial_ttl: int | None  # arrival TTL + routers crossed back; None for a TTL-copying injector
    df: bool
    tcp_window: int | None
    tcp_flags: str | None


@dataclass(frozen=True, slots=True)
class TraceSighting:
    """One network's trace of one flow, as the cross-network comparison needs it."""

    asn: str
    trigger: str
    seen_at: datetime
    injection_hop: int | None
    hops_before_server: int | None  # control answer hop - injection hop, when both are known
    signature: InjectorSignature | None
    # True: the original trigger still reached the server (its answer or acknowledgement came back beside
    # the injected packet): an on-path injector racing it. None: not shown (an in-path box holding the
    # trigger back, or a destination that never answers, e.g. a DNS query sent to a web server).
    on_path: bool | None = None
    # The injected packet's TTL follows the trigger's (its arrival TTL differs between the full-TTL trigger
    # and the TTL-limited one): the TTL says nothing about the injector's distance or identity.
    ttl_copying: bool | None = None


def _from_injector(packet: dict[str, Any], first: dict[str, Any]) -> bool:
    """Whether ``packet`` looks like ``first``'s sender: the same IP ID, or the same DF, window and flags
    (an injector with a changing IP ID), TTL aside (a TTL-copying injector changes it)."""
    if packet.get("ip_id") == first.get("ip_id"):
        return True
    keys = ("df", "tcp_window", "tcp_flags", "dns_answers")
    return all(packet.get(key) == first.get(key) for key in keys) and packet.get("ip_id") != 0


def _path_behaviour(packets: list[dict[str, Any]], first: dict[str, Any]) -> tuple[bool | None, bool | None]:
    injected = [p for p in packets if _from_injector(p, first)]
    if not injected:
        return None, None
    server_answered = len(injected) < len(packets)  # something else answered the same trigger
    return (True if server_answered else None), injected[0].get("ttl") != first.get("ttl")


def _sighting(trace: dict[str, Any], asn: str, seen_at: datetime) -> TraceSighting | None:
    if trace.get("status") != TRACE_DONE:
        return None
    hop, control = trace.get("injection_hop"), trace.get("control_answer_hop")
    signature = None
    first = next(
        (h.get("first") for h in trace.get("hops", []) if h.get("ttl") == hop and h.get("answered")), None
    )
    on_path = ttl_copying = None
    if hop is not None and first:
        on_path, ttl_copying = _path_behaviour(trace.get("packets", []), first)
        signature = InjectorSignature(
            ip_id=int(first["ip_id"]),
            initial_ttl=None if ttl_copying else int(first["ttl"]) + hop - 1,
            df=bool(first["df"]),
            tcp_window=first.get("tcp_window"),
            tcp_flags=first.get("tcp_flags"),
        )
    return TraceSighting(
        asn=asn,
        trigger=str(trace.get("trigger")),
        seen_at=seen_at,
        injection_hop=hop,
        hops_before_server=control - hop if hop is not None and control is not None else None,
        signature=signature,
        on_path=on_path,
        ttl_copying=ttl_copying,
    )


def sightings_from_payload(payload: bytes, asn: str, seen_at: datetime) -> tuple[TraceSighting, ...]:
    """The traced flows of one stored measurement (its signed JSON bytes, validated at ingest)."""
    if _MARKER not in payload:
        return ()
    try:
        traces = json.loads(payload)["test_keys"]["packet_traces"]
        found = (_sighting(trace, asn, seen_at) for trace in traces)
        return tuple(s for s in found if s is not None)
    except (ValueError, KeyError, TypeError):
        return ()  # stored before the field existed, or not a web measurement: no evidence


def _shown(sighting: TraceSighting) -> dict[str, Any]:
    shown = asdict(sighting)
    shown["seen_at"] = sighting.seen_at.isoformat()
    return shown


def judge_packet_evidence(sightings: Iterable[TraceSighting]) -> dict[str, Any] | None:
    """What the networks' latest traces say about where the injector is; None when no trace was made."""
    latest: dict[tuple[str, str], TraceSighting] = {}
    for sighting in sightings:
        key = (sighting.asn, sighting.trigger)
        if key not in latest or sighting.seen_at >= latest[key].seen_at:
            latest[key] = sighting
    if not latest:
        return None
    chosen = sorted(latest.values(), key=lambda s: (s.asn, s.trigger))
    located = [s for s in chosen if s.signature is not None]
    # One injector per trigger: every network that located one saw the same signature, as far from the server.
    one_injector = len({(s.trigger, s.signature, s.hops_before_server) for s in located}) == len(
        {s.trigger for s in located}
    )
    if not located:
        rule_id, supports = "packet.no_injector", None
    elif len({s.asn for s in located}) < 2:
        rule_id, supports = "packet.single_network", None
    elif one_injector:
        rule_id, supports = "packet.gateway.same_injector", "gateway"
    else:
        rule_id, supports = "packet.isp.different_injectors", "isp"
    return {
        "rule_id": rule_id,
        "supports": supports,
        "summary": PACKET_RULES[rule_id],
        "networks_traced": len({s.asn for s in chosen}),
        "networks_located": len({s.asn for s in located}),
        "sightings": [_shown(s) for s in chosen[:MAX_SIGHTINGS_SHOWN]],
    }

"""Packet evidence across networks (pure): one injector on the shared path, or several."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from gatewatch.analysis.attribution import RULES, AttributionSettings, attribute
from gatewatch.analysis.networks import Observation
from gatewatch.analysis.packet_evidence import judge_packet_evidence, sightings_from_payload
from gatewatch.core.observations import HopProbe, PacketTrace, TracedPacket

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _packet(ttl: int, ip_id: int = 0x2E2E, window: int = 4321) -> TracedPacket:
    return TracedPacket(delay=0.002, ttl=ttl, ip_id=ip_id, df=True, protocol="tcp", tcp_flags="R",
                        tcp_window=window, payload_size=0)  # fmt: skip


def _trace(injection_hop: int | None, server_hop: int, arrival_ttl: int, **signature: int) -> PacketTrace:
    last = injection_hop or server_hop
    hops = [HopProbe(ttl=t, answered=False) for t in range(1, last)]
    hops.append(HopProbe(ttl=last, answered=True, first=_packet(arrival_ttl, **signature)))
    return PacketTrace(
        trigger="tls", hostname="blocked.example", status="traced", hops=hops,
        answer_hop=last, control_answer_hop=server_hop, injection_hop=injection_hop,
    )  # fmt: skip


def _payload(*traces: PacketTrace) -> bytes:
    # The shape stored at ingest: a whole measurement's JSON, with the traces in its test keys.
    keys = {"queries": [], "packet_traces": [t.model_dump(mode="json") for t in traces]}
    return json.dumps({"measurement_uid": "x", "test_keys": keys}, separators=(",", ":")).encode()


def _seen(asn: str, *traces: PacketTrace, at: datetime = T0):
    return sightings_from_payload(_payload(*traces), asn, at)


def test_the_same_injector_seen_from_isps_of_different_depths_supports_gateway() -> None:
    # ISP A reaches the gateway at hop 3, ISP B at hop 2: the arrival TTLs differ by that one router,
    # the estimated initial TTL and the distance before the server do not.
    evidence = judge_packet_evidence([*_seen("AS1", _trace(3, 4, 59)), *_seen("AS2", _trace(2, 3, 60))])
    assert evidence["rule_id"] == "packet.gateway.same_injector" and evidence["supports"] == "gateway"
    assert {s["signature"]["initial_ttl"] for s in evidence["sightings"]} == {61}
    assert evidence["networks_located"] == 2


def test_different_signatures_or_distances_point_to_isp() -> None:
    other_box = judge_packet_evidence(
        [*_seen("AS1", _trace(3, 4, 59)), *_seen("AS2", _trace(2, 3, 60, ip_id=7))]
    )
    assert other_box["rule_id"] == "packet.isp.different_injectors" and other_box["supports"] == "isp"
    # The same headers, but one injector sits inside the ISP, two hops before the server instead of one.
    nearer = judge_packet_evidence([*_seen("AS1", _trace(3, 4, 59)), *_seen("AS2", _trace(1, 3, 61))])
    assert nearer["supports"] == "isp"


def test_one_network_or_no_injector_supports_nothing() -> None:
    assert judge_packet_evidence(_seen("AS1", _trace(3, 4, 59)))["rule_id"] == "packet.single_network"
    resolver = judge_packet_evidence([*_seen("AS1", _trace(None, 1, 64)), *_seen("AS2", _trace(None, 1, 64))])
    assert resolver["rule_id"] == "packet.no_injector" and resolver["supports"] is None
    assert judge_packet_evidence([]) is None


def test_a_networks_latest_trace_counts() -> None:
    old = _seen("AS2", _trace(1, 3, 61), at=T0 - timedelta(hours=2))
    evidence = judge_packet_evidence([*old, *_seen("AS1", _trace(3, 4, 59)), *_seen("AS2", _trace(2, 3, 60))])
    assert evidence["supports"] == "gateway"


def test_skipped_traces_and_payloads_without_traces_give_nothing() -> None:
    skipped = PacketTrace(trigger="dns", hostname="x", status="skipped", skip_reason="no_cap_net_raw")
    assert _seen("AS1", skipped) == ()
    assert sightings_from_payload(b'{"test_keys":{"queries":[]}}', "AS1", T0) == ()
    assert sightings_from_payload(b'"packet_traces":[{ not json', "AS1", T0) == ()


def _with_full_ttl_packets(trace: PacketTrace, *packets: TracedPacket) -> PacketTrace:
    return trace.model_copy(update={"packets": list(packets)})


def test_an_answer_from_the_server_beside_the_injected_one_shows_an_on_path_injector() -> None:
    server_ack = TracedPacket(delay=0.0001, ttl=60, ip_id=999, df=True, protocol="tcp", tcp_flags="A",
                              tcp_window=502, payload_size=0)  # fmt: skip
    raced = _with_full_ttl_packets(_trace(3, 4, 59), server_ack, _packet(59))
    (sighting,) = _seen("AS1", raced)
    assert sighting.on_path is True and sighting.ttl_copying is False
    (held_back,) = _seen("AS1", _with_full_ttl_packets(_trace(3, 4, 59), _packet(59)))
    assert held_back.on_path is None  # no answer from the server: not shown either way


def test_a_ttl_copying_injector_is_recognised_and_its_ttl_not_compared() -> None:
    # The TTL-limited trigger got the injected RST with TTL 1 left; the full-TTL one with 62: the
    # injector copies the trigger's TTL, so the TTL tells neither its distance nor its identity.
    copying_a = _with_full_ttl_packets(_trace(3, 4, 1), _packet(62))
    copying_b = _with_full_ttl_packets(_trace(2, 3, 1), _packet(63))
    (a,), (b,) = _seen("AS1", copying_a), _seen("AS2", copying_b)
    assert a.ttl_copying and b.ttl_copying and a.signature.initial_ttl is None
    assert judge_packet_evidence([a, b])["supports"] == "gateway"


# --- attribution uses the evidence (analysis/attribution.py) --------------------------------------------


def _history(asn: str, key: str, trace: PacketTrace | None) -> list[Observation]:
    """Three anomalous measurements of one network, the latest carrying ``trace`` (when given)."""
    return [
        Observation(
            probe_cc="XL",
            probe_asn=asn,
            input="https://blocked.example/",
            domain="blocked.example",
            test_name="web",
            seen_at=T0 - timedelta(minutes=30 - 10 * i),
            blocking="http-failure",
            anomaly=True,
            technique="tls.reset",
            fingerprint_key=key,
            measurement_uid=f"{asn}-{i}",
            packet_sightings=_seen(asn, trace, at=T0) if trace is not None and i == 2 else (),
        )  # fmt: skip
        for i in range(3)
    ]


def _decided(*networks: tuple[str, str, PacketTrace | None]) -> tuple[str, str]:
    observations = [o for asn, key, trace in networks for o in _history(asn, key, trace)]
    [row] = attribute(observations, T0 + timedelta(minutes=1), AttributionSettings())
    return row.rule_id, row.scope


def test_one_injector_behind_different_content_is_the_gateway() -> None:
    # Each ISP shows its own blockpage or failure (no shared fingerprint), but one box injected them all.
    untraced = _decided(("AS1", "fpA", None), ("AS2", "fpB", None), ("AS3", "fpC", None))
    assert untraced == ("scope.isp.no_shared_fingerprint", "isp")
    traced = _decided(
        ("AS1", "fpA", _trace(3, 4, 59)), ("AS2", "fpB", _trace(2, 3, 60)), ("AS3", "fpC", _trace(2, 3, 60))
    )
    assert traced == ("scope.gateway.same_injector", "gateway") and RULES[traced[0]].scope == "gateway"


def test_one_fingerprint_from_different_injectors_is_the_isps() -> None:
    # One blocklist everywhere (the same fingerprint), applied by a box of each ISP's own.
    untraced = _decided(("AS1", "fp", None), ("AS2", "fp", None), ("AS3", "fp", None))
    assert untraced == ("scope.gateway.same_fingerprint", "gateway")
    traced = _decided(
        ("AS1", "fp", _trace(3, 4, 59)), ("AS2", "fp", _trace(2, 3, 60, ip_id=7)), ("AS3", "fp", None)
    )
    assert traced == ("scope.isp.different_injectors", "isp")


def test_a_single_located_network_changes_nothing() -> None:
    decided = _decided(("AS1", "fp", _trace(3, 4, 59)), ("AS2", "fp", None), ("AS3", "fp", None))
    assert decided == ("scope.gateway.same_fingerprint", "gateway")

"""Header reading against packets scapy builds (the lab's forger), and against any bytes at all."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.probes.packet_headers import parse_ipv4, tcp_flag_letters, traced_packet


@settings(max_examples=150, deadline=None)
@given(
    ttl=st.integers(1, 255),
    ip_id=st.integers(0, 0xFFFF),
    df=st.booleans(),
    window=st.integers(0, 0xFFFF),
    flags=st.sampled_from(["R", "RA", "PA", "FA", "S", "SA", "A"]),
    payload=st.binary(max_size=64),
)
def test_tcp_headers_read_back_as_scapy_wrote_them(ttl, ip_id, df, window, flags, payload) -> None:
    from scapy.layers.inet import IP, TCP

    built = IP(src="10.0.0.1", dst="10.0.0.2", ttl=ttl, id=ip_id, flags="DF" if df else 0) / TCP(
        sport=443, dport=50000, flags=flags, window=window
    ) / payload  # fmt: skip
    packet = parse_ipv4(bytes(built))
    assert packet is not None
    assert (packet.ttl, packet.ip_id, packet.df, packet.tcp_window) == (ttl, ip_id, df, window)
    assert set(packet.tcp_flags) == set(str(built[TCP].flags))
    assert (packet.source_port, packet.destination_port, packet.payload) == (443, 50000, payload)
    assert traced_packet(packet, 0.01).payload_size == len(payload)


def test_a_dns_reply_keeps_its_code_and_a_records_not_its_addresses() -> None:
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP

    reply = IP(src="10.0.0.53", dst="10.0.0.2", id=7, ttl=57) / UDP(sport=53, dport=40000) / DNS(
        id=1, qr=1, qd=DNSQR(qname="x.example"), an=DNSRR(rrname="x.example", rdata="10.10.34.36")
    )  # fmt: skip
    traced = traced_packet(parse_ipv4(bytes(reply)), 0.002)
    assert (traced.protocol, traced.dns_rcode, traced.dns_answers, traced.ttl, traced.ip_id) == (
        "udp", "NOERROR", ["10.10.34.36"], 57, 7
    )  # fmt: skip
    assert "10.0.0.2" not in traced.model_dump_json() and "10.0.0.53" not in traced.model_dump_json()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_parse_or_are_refused_never_raise(data: bytes) -> None:
    packet = parse_ipv4(data)
    if packet is not None:
        traced_packet(packet, 0.0)


def test_flag_letters_follow_scapy() -> None:
    assert tcp_flag_letters(0x04) == "R" and tcp_flag_letters(0x18) == "PA" and tcp_flag_letters(0x11) == "FA"

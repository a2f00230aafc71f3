"""Read the headers a packet-level trace keeps out of an IPv4 packet (bytes in, a ``TracedPacket`` out).

Pure: no socket. Only the fields that tell one sender's packets from another's are kept (TTL, IP ID, DF,
TCP flags and window, payload size, a DNS reply's code and A records); addresses are compared by the
caller to pick the flow's packets and are never part of the result.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from gatewatch.core.observations import TracedPacket

__all__ = ["IPv4Packet", "parse_ipv4", "tcp_flag_letters", "traced_packet"]

PROTO_TCP = 6
PROTO_UDP = 17
_DF = 0x4000
# scapy's letters, in its order, so a trace reads the same as the lab's forging code.
_TCP_FLAGS = "FSRPAUECN"


@dataclass(frozen=True)
class IPv4Packet:
    source: str
    destination: str
    ttl: int
    ip_id: int
    df: bool
    protocol: int
    source_port: int | None
    destination_port: int | None
    tcp_flags: str | None
    tcp_window: int | None
    payload: bytes  # above the transport header


def tcp_flag_letters(bits: int) -> str:
    return "".join(letter for index, letter in enumerate(_TCP_FLAGS) if bits & (1 << index))


def parse_ipv4(data: bytes) -> IPv4Packet | None:
    """The packet's headers, or None when it is not a whole IPv4 TCP or UDP packet."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    header_length = (data[0] & 0x0F) * 4
    total_length = struct.unpack_from("!H", data, 2)[0]
    if header_length < 20 or len(data) < header_length or total_length < header_length:
        return None
    ip_id, flags_fragment, ttl, protocol = struct.unpack_from("!HHBB", data, 4)
    source = str(ipaddress.IPv4Address(data[12:16]))
    destination = str(ipaddress.IPv4Address(data[16:20]))
    body = data[header_length : min(total_length, len(data))]
    common = {"source": source, "destination": destination, "ttl": ttl, "ip_id": ip_id}
    df = bool(flags_fragment & _DF)
    if protocol == PROTO_UDP and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body, 0)
        ports = {"source_port": sport, "destination_port": dport}
        return IPv4Packet(
            **common, df=df, protocol=protocol, **ports, tcp_flags=None, tcp_window=None, payload=body[8:]
        )
    if protocol == PROTO_TCP and len(body) >= 20:
        sport, dport = struct.unpack_from("!HH", body, 0)
        offset = (body[12] >> 4) * 4
        flags = ((body[12] & 0x01) << 8) | body[13]
        window = struct.unpack_from("!H", body, 14)[0]
        if offset < 20 or offset > len(body):
            return None
        ports = {"source_port": sport, "destination_port": dport}
        letters = tcp_flag_letters(flags)
        return IPv4Packet(**common, df=df, protocol=protocol, **ports, tcp_flags=letters, tcp_window=window,
                          payload=body[offset:])  # fmt: skip
    return None


def traced_packet(packet: IPv4Packet, delay: float) -> TracedPacket:
    """What a trace records of ``packet``, which arrived ``delay`` seconds after the trigger left."""
    rcode: str | None = None
    answers: list[str] = []
    if packet.protocol == PROTO_UDP:
        try:
            message = dns.message.from_wire(packet.payload)
        except (dns.exception.DNSException, ValueError):
            pass
        else:
            rcode = dns.rcode.to_text(message.rcode())
            answers = [
                rd.address for rrset in message.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset
            ]
    return TracedPacket(
        delay=round(max(0.0, delay), 6),
        ttl=packet.ttl,
        ip_id=packet.ip_id,
        df=packet.df,
        protocol="udp" if packet.protocol == PROTO_UDP else "tcp",
        tcp_flags=packet.tcp_flags,
        tcp_window=packet.tcp_window,
        payload_size=len(packet.payload),
        dns_rcode=rcode,
        dns_answers=answers[:16],
    )

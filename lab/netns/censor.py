"""The national gateway's on-path censor: ``python -m gatewatch.lab.netns.censor CONFIG`` in its namespace.

It sees a copy of every packet the volunteers' ISPs send abroad (an AF_PACKET socket on the gateway's
ISP-facing interfaces) and never holds one back: like the real ones, it races the real answer with a
forged packet sent from a raw socket, and the original goes on to its server. For each technique it
forges with scapy, with the technique's fixed signature of ``scenario.SIGNATURES``:

- DNS injection: a query for a listed name gets a forged A record; the real reply still follows.
- TLS: a ClientHello with a listed SNI gets a RST towards the client (and one towards the server).
- HTTP: a request with a listed Host gets a blockpage and a FIN in the server's sequence space.

IP blackholing is an iptables DROP set by the lab (``NetnsLab``), not by this process. ``forge()`` is
pure (a packet in, the packets to inject out), so it is tested without a namespace.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clienthello import parse_sni
from .lifetime import MAX_RUNTIME, die_with_parent
from .scenario import BLOCKPAGE_BODY, DNS_INJECTED_ADDRESS, SIGNATURES, PacketSignature

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["CensorConfig", "forge", "main"]

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class CensorConfig:
    interfaces: tuple[str, ...]  # the gateway's ISP-facing interfaces
    dns_names: tuple[str, ...] = ()
    sni_names: tuple[str, ...] = ()
    host_names: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> CensorConfig:
        return cls(**{key: tuple(value) for key, value in json.loads(text).items()})


def _ip(original: Any, signature: PacketSignature) -> Packet:
    from scapy.layers.inet import IP

    return IP(
        src=original.dst,
        dst=original.src,
        id=signature.ip_id,
        ttl=signature.ttl,
        flags="DF" if signature.df else 0,
    )


def _blockpage() -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(BLOCKPAGE_BODY)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + BLOCKPAGE_BODY


def _host(payload: bytes) -> str | None:
    head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "host":
            return value.strip().split(":")[0].lower()
    return None


def forge(packet: Packet, config: CensorConfig) -> list[Packet]:
    """The packets the censor injects on seeing ``packet`` (an IP packet), in sending order."""
    from scapy.layers.dns import DNS, DNSRR
    from scapy.layers.inet import IP, TCP, UDP

    if IP not in packet:
        return []
    ip = packet[IP]
    if UDP in packet and packet[UDP].dport == 53 and DNS in packet:
        query = packet[DNS]
        if query.qr != 0 or not query.qd:
            return []
        question = query.qd[0]
        name = question.qname.decode("ascii", "replace").lower().rstrip(".")
        if name not in config.dns_names or question.qtype != 1:
            return []
        answer = DNSRR(rrname=question.qname, type="A", ttl=300, rdata=DNS_INJECTED_ADDRESS)
        reply = DNS(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, qd=question, an=answer)
        return [_ip(ip, SIGNATURES["dns_injection"]) / UDP(sport=53, dport=packet[UDP].sport) / reply]
    if TCP not in packet:
        return []
    tcp = packet[TCP]
    payload = bytes(tcp.payload)
    if not payload:
        return []
    next_seq = tcp.seq + len(payload)
    if tcp.dport == 443 and (parse_sni(payload) or "").lower() in config.sni_names:
        sig = SIGNATURES["tls_reset"]
        to_client = _ip(ip, sig) / TCP(
            sport=tcp.dport, dport=tcp.sport, seq=tcp.ack, flags="R", window=sig.window
        )
        to_server = IP(src=ip.src, dst=ip.dst, id=sig.ip_id, ttl=sig.ttl, flags="DF" if sig.df else 0) / TCP(
            sport=tcp.sport, dport=tcp.dport, seq=next_seq, flags="R", window=sig.window
        )
        return [to_client, to_server]
    if tcp.dport == 80 and (_host(payload) or "") in config.host_names:
        sig = SIGNATURES["http_blockpage"]
        page = _blockpage()
        common = {"sport": tcp.dport, "dport": tcp.sport, "ack": next_seq, "window": sig.window}
        return [
            _ip(ip, sig) / TCP(seq=tcp.ack, flags="PA", **common) / page,
            _ip(ip, sig) / TCP(seq=tcp.ack + len(page), flags="FA", **common),
        ]
    return []


def run(config: CensorConfig, max_runtime: float = MAX_RUNTIME) -> None:
    # scapy's DNS layer is loaded before "ready": a first forgery that waited for it would lose its race.
    from scapy.layers.dns import DNS  # noqa: F401
    from scapy.layers.inet import IP

    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    injector = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    watched = set(config.interfaces)
    print("ready", flush=True)
    deadline = time.monotonic() + max_runtime
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sniffer], [], [], 1.0)
        if not readable:
            continue
        frame, address = sniffer.recvfrom(65535)
        if address[0] not in watched or address[2] == PACKET_OUTGOING:
            continue
        try:
            forged = forge(IP(frame), config)
        except Exception:  # a packet scapy cannot dissect is not one the censor cares about
            continue
        for packet in forged:
            injector.sendto(bytes(packet), (packet[IP].dst, 0))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    run(CensorConfig.from_json(Path(args[0]).read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()

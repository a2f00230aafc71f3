"""The optional privileged ``trace`` step: packet-level evidence of where a flow was tampered with.

Only with CAP_NET_RAW (the volunteer grants it with ``deploy/systemd/gatewatch-agent.service.d/``), and
only for a flow the agent's verdict found interfered with, the step re-sends the flow's trigger (the DNS
query, the TLS ClientHello, the HTTP request) and reads every packet that comes back on raw sockets:

1. once with the system's TTL: each answering packet's TTL, IP ID, DF, TCP flags and window, payload size
   and delay (for DNS, every reply: an injector's forged one first, the resolver's real one after);
2. with TTL 1, 2, ... N (bounded, paced, stopping at the first answer): the nearest hop that answers;
3. the same for a control name nobody blocks, on the same path: the server's own distance.

An answer to the trigger from nearer than the control's answer came from a box on the path, at that hop
(CenTrace's method). Hop addresses are never recorded: inside the volunteer's own network they would say
where the volunteer is, and the hop count is the evidence. Without the capability the step records that
it was skipped and why, and sends nothing. The connections are the kernel's own (``IP_TTL`` on a normal
socket once it is connected), so no packet is built by hand and no scapy is needed on a volunteer's
machine; the raw sockets only listen.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dns.message

from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import HopProbe, PacketTrace, TracedPacket
from gatewatch.core.vocabulary import (
    NO_CAP_NET_RAW,
    TRACE_DONE,
    TRACE_FAILED,
    TRACE_SKIPPED,
    TraceTrigger,
)

from .packet_headers import PROTO_TCP, PROTO_UDP, IPv4Packet, parse_ipv4, traced_packet

__all__ = ["PacketTraceConfig", "missing_capability", "plan_traces", "trace_flow", "trace_interfered"]

CAP_NET_RAW_BIT = 13
MAX_HOPS_LIMIT = 32
MAX_PACKETS = 32
SYSTEM_TTL = 64


@dataclass(frozen=True)
class PacketTraceConfig:
    max_hops: int = 12  # TTL 1..max_hops at most
    hop_wait: float = 0.4  # how long each TTL step listens (an injector answers in well under this)
    listen: float = 0.6  # how long the full-TTL trigger listens (for the real reply after a forged one)
    pace: float = 0.05  # between two TTL steps
    connect_timeout: float = 3.0
    control_hostname: str = "example.com"  # a name no censor is expected to block

    def __post_init__(self) -> None:
        if not 1 <= self.max_hops <= MAX_HOPS_LIMIT:
            raise ValueError(f"max_hops must be 1..{MAX_HOPS_LIMIT}")
        if not (0 < self.hop_wait <= 5 and 0 < self.listen <= 5 and 0 <= self.pace <= 5):
            raise ValueError("hop_wait, listen and pace are seconds, at most 5")


def missing_capability(status_file: Path = Path("/proc/self/status")) -> str | None:
    """None when this process may open raw sockets (CAP_NET_RAW in its effective set), else the reason."""
    try:
        for line in status_file.read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return None if int(line.split()[1], 16) >> CAP_NET_RAW_BIT & 1 else NO_CAP_NET_RAW
    except (OSError, ValueError):
        pass
    return NO_CAP_NET_RAW


def _client_hello(hostname: str) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _http_request(hostname: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {hostname}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode("ascii")


def _collect(
    raw: socket.socket, wanted: Callable[[IPv4Packet], bool], start: float, wait: float, ttl: int
) -> list[TracedPacket]:
    """The packets ``wanted`` accepts that arrive on ``raw`` within ``wait`` seconds of ``start``; after a
    TTL-limited trigger only whether anything answers matters, so the first one ends the wait."""
    found: list[TracedPacket] = []
    deadline = start + wait
    while len(found) < MAX_PACKETS and (left := deadline - time.monotonic()) > 0:
        if not select.select([raw], [], [], left)[0]:
            break
        packet = parse_ipv4(raw.recv(65535))
        if packet is not None and wanted(packet):
            found.append(traced_packet(packet, time.monotonic() - start))
            if ttl != SYSTEM_TTL:
                break
    return found


def _drain(raw: socket.socket) -> None:
    raw.setblocking(False)
    try:
        for _ in range(10_000):
            raw.recv(65535)
    except BlockingIOError:
        pass
    raw.setblocking(True)


def _dns_exchange(server: str, hostname: str, ttl: int, wait: float) -> list[TracedPacket]:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_UDP) as raw,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.connect((server, 53))
        udp.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        port = udp.getsockname()[1]
        start = time.monotonic()
        udp.send(dns.message.make_query(hostname, "A").to_wire())
        return _collect(
            raw,
            lambda p: (p.source, p.source_port, p.destination_port) == (server, 53, port),
            start,
            wait,
            ttl,
        )


def _tcp_exchange(
    server: str, port: int, payload: bytes, ttl: int, wait: float, timeout: float
) -> list[TracedPacket]:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_TCP) as raw:
        conn = socket.create_connection((server, port), timeout=timeout)
        try:
            local_port = conn.getsockname()[1]
            _drain(raw)  # the handshake's SYN-ACK is not an answer to the trigger
            conn.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            start = time.monotonic()
            conn.sendall(payload)
            flow = (server, port, local_port)
            return _collect(
                raw, lambda p: (p.source, p.source_port, p.destination_port) == flow, start, wait, ttl
            )
        finally:
            conn.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, SYSTEM_TTL)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
            conn.close()


Exchange = Callable[[int, float], list[TracedPacket]]


def _exchange(trigger: TraceTrigger, hostname: str, server: str, config: PacketTraceConfig) -> Exchange:
    """A function of (ttl, wait) sending ``trigger`` for ``hostname`` to ``server`` once."""
    if trigger == "dns":
        return lambda ttl, wait: _dns_exchange(server, hostname, ttl, wait)
    payload, port = (_client_hello(hostname), 443) if trigger == "tls" else (_http_request(hostname), 80)
    return lambda ttl, wait: _tcp_exchange(server, port, payload, ttl, wait, config.connect_timeout)


def _sweep(send: Exchange, config: PacketTraceConfig) -> list[HopProbe]:
    hops: list[HopProbe] = []
    for ttl in range(1, config.max_hops + 1):
        packets = send(ttl, config.hop_wait)
        hops.append(HopProbe(ttl=ttl, answered=bool(packets), first=packets[0] if packets else None))
        if packets:
            break
        time.sleep(config.pace)
    return hops


def _answer_hop(hops: list[HopProbe]) -> int | None:
    return next((hop.ttl for hop in hops if hop.answered), None)


def _trace(trigger: TraceTrigger, hostname: str, server: str, config: PacketTraceConfig) -> PacketTrace:
    try:
        packets = _exchange(trigger, hostname, server, config)(SYSTEM_TTL, config.listen)
        hops = _sweep(_exchange(trigger, hostname, server, config), config)
        control_hops = _sweep(_exchange(trigger, config.control_hostname, server, config), config)
    except OSError as exc:
        from gatewatch.core.failures import classify

        return PacketTrace(trigger=trigger, hostname=hostname, status=TRACE_FAILED, skip_reason=classify(exc))
    answer, control = _answer_hop(hops), _answer_hop(control_hops)
    return PacketTrace(
        trigger=trigger,
        hostname=hostname,
        status=TRACE_DONE,
        packets=packets,
        hops=hops,
        control_hostname=config.control_hostname,
        control_hops=control_hops,
        answer_hop=answer,
        control_answer_hop=control,
        injection_hop=answer if answer is not None and (control is None or answer < control) else None,
    )


async def trace_flow(
    trigger: TraceTrigger, hostname: str, server: str, config: PacketTraceConfig | None = None
) -> PacketTrace:
    """Trace one flow: ``trigger`` for ``hostname`` sent to ``server`` (an IPv4 address). Never raises for
    a network failure; without CAP_NET_RAW returns a ``skipped`` trace and sends nothing."""
    reason = missing_capability()
    if reason is not None:
        return PacketTrace(trigger=trigger, hostname=hostname, status=TRACE_SKIPPED, skip_reason=reason)
    return await asyncio.to_thread(_trace, trigger, hostname, server, config or PacketTraceConfig())


def _ipv4(address: str | None) -> str | None:
    """The IPv4 address of an "ip:port" (or bare) address; None for IPv6 or nothing (traces are IPv4)."""
    if not address or address.startswith("["):
        return None
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host if host.count(".") == 3 else None


def plan_traces(
    url: str, keys: WebTestKeys, blocking: object, control_addresses: Sequence[str] = ()
) -> list[tuple[TraceTrigger, str, str]]:
    """Which flows of a measurement to trace, as (trigger, hostname, server address): pure.

    DNS is traced towards an address abroad (the control's answer for the name): an on-path injector
    answers a query whatever its destination, while a query to the volunteer's own resolver would only
    ever be answered by that resolver. TLS and HTTP are traced to the address the probe used. A blackhole
    (``tcp_ip``) has no injected packet to record and is not traced.
    """
    hostname = (urlsplit(url).hostname or "").lower()
    abroad = next((a for a in map(_ipv4, control_addresses) if a), None)
    if not hostname:
        return []
    if blocking == "dns":
        return [("dns", hostname, abroad)] if abroad else []
    if blocking not in ("http-failure", "http-diff"):
        return []
    if urlsplit(url).scheme == "https":
        used = next((a for a in (_ipv4(h.address) for h in keys.tls_handshakes) if a), abroad)
        return [("tls", hostname, used)] if used else []
    used = next((a for a in (_ipv4(r.address) for r in keys.requests) if a), abroad)
    return [("http", hostname, used)] if used else []


async def trace_interfered(
    url: str,
    keys: WebTestKeys,
    blocking: object,
    control_addresses: Sequence[str] = (),
    config: PacketTraceConfig | None = None,
) -> list[PacketTrace]:
    """The packet traces of a measurement whose verdict is ``blocking`` (empty when nothing applies)."""
    return [
        await trace_flow(*planned, config) for planned in plan_traces(url, keys, blocking, control_addresses)
    ]

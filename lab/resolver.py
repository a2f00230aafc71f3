"""The lab's DNS: a resolver on UDP and TCP, plus the censor's on-path injector and resolver tampering.

``decide()`` is the pure part (who asks, what name, what the scenario says -> the answers to send);
``LabResolver`` is the thin I/O shell around it; it also holds each reply back by the scenario's latency,
so a DNS round trip through the lab costs what it would across a real network.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .networks import BOGUS_ADDRESS, INJECTED_ADDRESS, network_of
from .scenario import Scenario
from .serving import AcceptLoop
from .wildcard import is_wildcard_name, wildcard_address

__all__ = ["INJECTION_DELAY", "DNSDecision", "LabResolver", "decide"]

# The real reply follows the forged one by this much: enough for a probe to see two distinct replies.
INJECTION_DELAY = 0.03
TTL = 300
WHOAMI = "whoami."
MAX_TCP_QUERIES = 16  # per connection
TCP_IDLE_TIMEOUT = 5.0


@dataclass(frozen=True)
class DNSDecision:
    rcode: dns.rcode.Rcode
    addresses: tuple[str, ...] = ()  # A records of the resolver's reply
    injected: tuple[str, ...] | None = None  # the forged reply's A records, sent first; None: no injection


def decide(
    scenario: Scenario,
    server_addresses: Mapping[str, str],
    qname: str,
    qtype: dns.rdatatype.RdataType,
    client_address: str,
    wildcard_addresses: Sequence[str] = (),
) -> DNSDecision:
    """What the lab's DNS path answers ``client_address`` for (``qname``, ``qtype``).

    With ``wildcard_addresses``, a hostname the scenario does not list is a clean site at one of them.
    """
    name = qname.lower().rstrip(".")
    network = network_of(client_address)
    is_a = qtype == dns.rdatatype.A
    if name.startswith(WHOAMI):
        base = name[len(WHOAMI) :]
        if base in scenario and scenario.domain(base).applies("echo_client", network):
            return DNSDecision(dns.rcode.NOERROR, (client_address,) if is_a else ())
    if name not in scenario and wildcard_addresses and is_wildcard_name(name):
        return DNSDecision(dns.rcode.NOERROR, (wildcard_address(name, wildcard_addresses),) if is_a else ())
    if name not in scenario or not scenario.domain(name).exists:
        return DNSDecision(dns.rcode.NXDOMAIN)
    spec = scenario.domain(name)
    # The injector sits on the path, before the resolver: it races whatever the resolver answers.
    injected = (INJECTED_ADDRESS,) if is_a and spec.applies("dns_injection", network) else None
    if spec.applies("resolver_nxdomain", network):
        return DNSDecision(dns.rcode.NXDOMAIN, injected=injected)
    if spec.applies("resolver_bogus_ip", network):
        return DNSDecision(dns.rcode.NOERROR, (BOGUS_ADDRESS,) if is_a else (), injected)
    # Lab names have IPv4 addresses only: AAAA (and other types) get NOERROR with no answer.
    return DNSDecision(dns.rcode.NOERROR, (server_addresses[name],) if is_a else (), injected)


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode, addresses: tuple[str, ...]) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    response.set_rcode(rcode)
    if addresses:
        question = query.question[0]
        response.answer.append(
            dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, *addresses)
        )
    return response.to_wire()


def _question(wire: bytes) -> tuple[dns.message.Message, str, dns.rdatatype.RdataType] | None:
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None
    if query.flags & dns.flags.QR or len(query.question) != 1:
        return None
    question = query.question[0]
    return query, question.name.to_text(), question.rdtype


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: LabResolver) -> None:
        self._resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._resolver.answer_datagram(data, addr)


class LabResolver:
    """Serves the scenario's names on ``udp_sock`` and ``tcp_sock`` (bound, same address and port)."""

    def __init__(
        self,
        scenario: Scenario,
        server_addresses: Mapping[str, str],
        udp_sock: socket.socket,
        tcp_sock: socket.socket,
        *,
        wildcard_addresses: Sequence[str] = (),
    ) -> None:
        self._scenario = scenario
        self._addresses = dict(server_addresses)
        self._wildcard = tuple(wildcard_addresses)
        self._latency = scenario.latency
        self._udp_sock = udp_sock
        # Over TCP the accept delay stands for the handshake's round trip, the reply delay for the query's.
        self._tcp = AcceptLoop(tcp_sock, self._serve_tcp, latency=self._latency)
        self._protocol: _UDPProtocol | None = None
        self._delayed: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._protocol = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), sock=self._udp_sock
        )
        self._tcp.start()

    async def close(self) -> None:
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        else:
            self._udp_sock.close()
        await self._tcp.close()

    def answer_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        parsed = _question(data)
        if parsed is None or self._protocol is None or self._protocol.transport is None:
            return  # garbage is dropped, as a resolver under load would
        query, qname, qtype = parsed
        decision = decide(self._scenario, self._addresses, qname, qtype, addr[0], self._wildcard)
        real = _reply(query, decision.rcode, decision.addresses)
        if decision.injected is None:
            self._send_after(self._latency, real, addr)
            return
        # The forged reply keeps its head start over the real one whatever the latency.
        self._send_after(self._latency, _reply(query, dns.rcode.NOERROR, decision.injected), addr)
        self._send_after(self._latency + INJECTION_DELAY, real, addr)

    def _send_after(self, delay: float, wire: bytes, addr: tuple[str, int]) -> None:
        if self._protocol is None or self._protocol.transport is None:
            return
        transport = self._protocol.transport
        if delay <= 0:
            transport.sendto(wire, addr)
            return
        handle: asyncio.TimerHandle | None = None

        def send() -> None:
            self._delayed.discard(handle)  # type: ignore[arg-type]
            if not transport.is_closing():
                transport.sendto(wire, addr)

        handle = asyncio.get_running_loop().call_later(delay, send)
        self._delayed.add(handle)

    async def _serve_tcp(self, conn: socket.socket, client_address: str) -> None:
        # Over TCP the injector cannot race the resolver (it would have to hijack the stream), so only
        # the resolver's own tampering applies: this is how real injectors behave too.
        loop = asyncio.get_running_loop()
        for _ in range(MAX_TCP_QUERIES):
            async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                header = await _recv_exactly(loop, conn, 2)
                if header is None:
                    return
                wire = await _recv_exactly(loop, conn, int.from_bytes(header, "big"))
            if wire is None:
                return
            parsed = _question(wire)
            if parsed is None:
                return
            query, qname, qtype = parsed
            decision = decide(self._scenario, self._addresses, qname, qtype, client_address, self._wildcard)
            reply = _reply(query, decision.rcode, decision.addresses)
            if self._latency > 0:
                await asyncio.sleep(self._latency)
            await loop.sock_sendall(conn, len(reply).to_bytes(2, "big") + reply)


async def _recv_exactly(loop: asyncio.AbstractEventLoop, conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:  # bounded by `size` and the caller's timeout
        chunk = await loop.sock_recv(conn, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)

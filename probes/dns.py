"""DNS probe: ask one resolver over UDP (TCP when truncated) and record every reply that comes back.

An on-path injector answers before the real resolver does; a stub resolver believes the first reply
and drops the rest. This probe keeps listening ``config.linger`` seconds after the first reply, so a
forged answer and the genuine one are both in ``DNSQuery.replies`` (injection shows as two or more).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from gatewatch.core import failures
from gatewatch.core.bogons import is_bogon_remembered
from gatewatch.core.observations import DNSAnswer, DNSQuery, DNSReply

from .config import DNSConfig
from .connection import DatagramInbox, format_address, may_be_ip_literal, open_socket
from .dns_wire import PlainReply, Reply, WireQuery, is_plain_name, make_query, parse_reply
from .trace import Trace

__all__ = [
    "Resolution",
    "measure",
    "parse_resolver",
    "resolve",
    "resolve_early",
    "reverse_names",
    "system_resolver",
]

RESOLV_CONF = Path("/etc/resolv.conf")
# Bounds on what one query may record, so that a hostile resolver cannot make a measurement huge.
_MAX_REPLIES = 16
_MAX_DATAGRAMS = 64
_MAX_ANSWERS = 64

_RCODE_FAILURES = {
    dns.rcode.NXDOMAIN: failures.DNS_NXDOMAIN_ERROR,
    dns.rcode.SERVFAIL: failures.DNS_SERVFAIL_ERROR,
    dns.rcode.REFUSED: failures.DNS_REFUSED_ERROR,
}


def parse_resolver(text: str) -> tuple[str, int]:
    """``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` (a bare IPv6 address means port 53) -> (ip, port)."""
    text = text.strip()
    if text.startswith("["):
        ip, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed resolver address: {text!r}")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        ip, port_text = text.split(":")
    else:
        ip, port_text = text, ""
    ipaddress.ip_address(ip.split("%", 1)[0])  # ValueError on anything that is not an address
    port = int(port_text) if port_text else 53
    if not 0 < port < 65536:
        raise ValueError(f"resolver port out of range: {text!r}")
    return ip, port


def system_resolver(path: Path = RESOLV_CONF) -> str:
    """The first ``nameserver`` of resolv.conf; 127.0.0.1, as glibc does, when there is none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            return fields[1]
    return "127.0.0.1"


def _plain_answers(msg: PlainReply, config: DNSConfig) -> list[DNSAnswer]:
    """The answers of a reply read by the fast path (dns_wire): A and AAAA rrsets only, read as
    :func:`_answers` reads dnspython's."""
    answers: list[DNSAnswer] = []
    for rdtype, ttl, addresses in msg.rrsets:
        answer_type = "A" if rdtype == dns.rdatatype.A else "AAAA"
        for ip in addresses:
            if len(answers) >= _MAX_ANSWERS:
                return answers
            bogon = is_bogon_remembered(ip, tuple(config.routable))
            if answer_type == "A":
                answers.append(DNSAnswer(answer_type="A", ipv4=ip, ttl=ttl, bogon=bogon))
            else:
                answers.append(DNSAnswer(answer_type="AAAA", ipv6=ip, ttl=ttl, bogon=bogon))
    return answers


def _answers(msg: Reply, config: DNSConfig) -> list[DNSAnswer]:
    if isinstance(msg, PlainReply):
        return _plain_answers(msg, config)
    answers: list[DNSAnswer] = []
    for rrset in msg.answer:
        for rdata in rrset:
            if len(answers) >= _MAX_ANSWERS:
                return answers
            if rrset.rdtype == dns.rdatatype.A:
                ip = rdata.address
                answers.append(
                    DNSAnswer(
                        answer_type="A",
                        ipv4=ip,
                        ttl=rrset.ttl,
                        bogon=is_bogon_remembered(ip, tuple(config.routable)),
                    )
                )
            elif rrset.rdtype == dns.rdatatype.AAAA:
                ip = rdata.address
                answers.append(
                    DNSAnswer(
                        answer_type="AAAA",
                        ipv6=ip,
                        ttl=rrset.ttl,
                        bogon=is_bogon_remembered(ip, tuple(config.routable)),
                    )
                )
            elif rrset.rdtype == dns.rdatatype.CNAME:
                target = rdata.target.to_text(omit_final_dot=True)
                answers.append(DNSAnswer(answer_type="CNAME", hostname=target, ttl=rrset.ttl))
    return answers


def _reply(msg: Reply, wire: bytes, t: float, config: DNSConfig) -> DNSReply:
    return DNSReply(
        t=t,
        rcode=dns.rcode.to_text(msg.rcode()),
        answers=_answers(msg, config),
        wire_sha256=hashlib.sha256(wire).hexdigest(),
    )


def _failure(reply: DNSReply, query_type: str) -> str | None:
    rcode = dns.rcode.from_text(reply.rcode)
    if rcode == dns.rcode.NOERROR:
        if any(a.answer_type == query_type for a in reply.answers):
            return None
        return failures.DNS_NO_ANSWER
    return _RCODE_FAILURES.get(rcode, failures.UNKNOWN_FAILURE)


async def _udp_exchange(
    query: WireQuery,
    server: tuple[str, int],
    config: DNSConfig,
    trace: Trace,
    first: asyncio.Future[list[DNSAnswer] | None] | None = None,
) -> tuple[list[tuple[DNSReply, Reply]], str | None]:
    """Send ``query`` once; collect matching replies until the timeout (none yet) or linger ends.

    ``first``, when given, gets the first reply's answers as soon as it arrives (None when it is truncated:
    the stub then waits for TCP), so that a caller can go on while the linger runs."""
    loop = asyncio.get_running_loop()
    received: list[tuple[DNSReply, Reply]] = []
    try:
        sock = open_socket(socket.SOCK_DGRAM, server[0], config.source_address)
    except OSError as exc:
        return received, failures.classify(exc)
    with sock:
        try:
            # connect() makes the kernel drop datagrams from other sources and report ICMP errors.
            await loop.sock_connect(sock, server)
            await loop.sock_sendall(sock, query.wire)
        except OSError as exc:
            return received, failures.classify(exc)
        deadline = loop.time() + config.timeout
        inbox = DatagramInbox(sock, _MAX_DATAGRAMS)
        try:
            for _ in range(_MAX_DATAGRAMS):
                if deadline - loop.time() <= 0 or len(received) >= _MAX_REPLIES:
                    break
                wire = await inbox.next(deadline)
                if wire is None:
                    break  # the timeout (nothing yet) or the linger ended
                if isinstance(wire, OSError):
                    if not received:
                        return received, failures.classify(wire)
                    break
                msg = parse_reply(query, wire)
                if msg is None:
                    continue
                received.append((_reply(msg, wire, trace.now(), config), msg))
                if len(received) == 1:
                    deadline = loop.time() + config.linger
                    if first is not None and not first.done():
                        first.set_result(None if msg.flags & dns.flags.TC else received[0][0].answers)
        finally:
            inbox.close()
    if not received:
        return received, failures.GENERIC_TIMEOUT_ERROR
    return received, None


async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:  # each read returns at least one byte, so this ends within `size` reads
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("resolver closed the TCP connection mid-reply")
        data += chunk
    return data


async def _tcp_exchange(
    query: WireQuery, server: tuple[str, int], config: DNSConfig, trace: Trace
) -> tuple[DNSReply | None, str | None]:
    """One query over TCP (RFC 7766 length-prefixed); a reply that does not match is invalid."""
    loop = asyncio.get_running_loop()
    wire = query.wire
    try:
        sock = open_socket(socket.SOCK_STREAM, server[0], config.source_address)
    except OSError as exc:
        return None, failures.classify(exc)
    with sock:
        try:
            async with asyncio.timeout(config.timeout):
                await loop.sock_connect(sock, server)
                await loop.sock_sendall(sock, len(wire).to_bytes(2, "big") + wire)
                size = int.from_bytes(await _recv_exactly(sock, 2), "big")
                reply_wire = await _recv_exactly(sock, size)
        except (OSError, EOFError, TimeoutError) as exc:
            return None, failures.classify(exc)
    msg = parse_reply(query, reply_wire)
    if msg is None:
        return None, failures.UNKNOWN_FAILURE
    return _reply(msg, reply_wire, trace.now(), config), None


async def _query(
    hostname: str,
    query_type: str,
    server: tuple[str, int],
    config: DNSConfig,
    trace: Trace,
    first: asyncio.Future[list[DNSAnswer] | None] | None = None,
) -> DNSQuery:
    query = make_query(hostname, query_type)
    t0 = trace.now()
    received, failure = await _udp_exchange(query, server, config, trace, first)
    replies = [reply for reply, _ in received]
    engine = "udp"
    truncated = bool(received) and bool(received[0][1].flags & dns.flags.TC)
    if truncated:
        # The stub would retry over TCP and believe that answer. Every reply stays in `replies`,
        # the TCP one last, so the truncated UDP reply is not mistaken for a second, differing answer
        # without `truncated_retry_over_tcp` to explain it.
        engine = "tcp"
        tcp_reply, failure = await _tcp_exchange(query, server, config, trace)
        if tcp_reply is not None:
            replies.append(tcp_reply)
        stub_reply = tcp_reply
    else:
        stub_reply = replies[0] if replies else None
    if stub_reply is not None:
        failure = _failure(stub_reply, query_type)
    return DNSQuery(
        engine=engine,
        resolver_address=format_address(*server),
        hostname=hostname,
        query_type=query_type,
        t0=t0,
        t=trace.now(),
        failure=failure,
        rcode=stub_reply.rcode if stub_reply is not None else None,
        answers=list(stub_reply.answers) if stub_reply is not None else [],
        replies=replies,
        truncated_retry_over_tcp=truncated,
    )


def _check_hostname(hostname: str) -> None:
    if is_plain_name(hostname):
        return  # letters, digits, "-" and "_" in labels of 1 to 63, under 255 bytes: a DNS name
    try:
        dns.name.from_text(hostname)
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a valid DNS name: {hostname!r} ({exc})") from exc


async def measure(hostname: str, config: DNSConfig, trace: Trace) -> list[DNSQuery]:
    """One ``DNSQuery`` per ``config.query_types``, asked concurrently of the configured resolver.

    Raises ``ValueError`` for a hostname that is not a DNS name or a resolver that is not an address
    (caller bugs); every network outcome is recorded instead.
    """
    _check_hostname(hostname)
    server = parse_resolver(config.resolver if config.resolver is not None else system_resolver())
    return list(
        await asyncio.gather(*(_query(hostname, qt, server, config, trace) for qt in config.query_types))
    )


def _literal(hostname: str) -> str | None:
    text = hostname.strip("[]")
    if not may_be_ip_literal(text):
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@dataclass
class Resolution:
    """A stub resolver's addresses as soon as it would have them, and the full record of every query once
    each has lingered for late replies (an injector's forged reply comes first, the real one after).

    Waiting for the linger before connecting would add it to every measurement; OONI likewise collects late
    replies while the measurement goes on. ``queries()`` must be awaited (or ``cancel()`` called)."""

    addresses: list[str]
    _tasks: tuple[asyncio.Task[DNSQuery], ...] = ()

    async def queries(self) -> list[DNSQuery]:
        return list(await asyncio.gather(*self._tasks))

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


def _stub_addresses(answers_by_type: dict[str, list[DNSAnswer]]) -> list[str]:
    """A before AAAA, de-duplicated, only addresses of the type asked."""
    addresses: list[str] = []
    for query_type in ("A", "AAAA"):
        for answer in answers_by_type.get(query_type, []):
            address = answer.address
            if answer.answer_type == query_type and address is not None and address not in addresses:
                addresses.append(address)
    return addresses


async def resolve_early(hostname: str, config: DNSConfig, trace: Trace) -> Resolution:
    """Ask every query type concurrently; return once each has its stub answer (first reply, the TCP one
    after truncation, or its failure) while late replies are still being collected."""
    literal = _literal(hostname)
    if literal is not None:
        return Resolution([literal])
    _check_hostname(hostname)
    server = parse_resolver(config.resolver if config.resolver is not None else system_resolver())
    loop = asyncio.get_running_loop()
    firsts = {qt: loop.create_future() for qt in config.query_types}
    tasks = {
        qt: asyncio.ensure_future(_query(hostname, qt, server, config, trace, firsts[qt])) for qt in firsts
    }
    resolution = Resolution([], tuple(tasks.values()))
    answers: dict[str, list[DNSAnswer]] = {}
    try:
        for qt, task in tasks.items():
            first = firsts[qt]
            await asyncio.wait({first, task}, return_when=asyncio.FIRST_COMPLETED)
            early = first.result() if first.done() else None
            answers[qt] = early if early is not None else (await task).answers
    except BaseException:
        resolution.cancel()
        raise
    resolution.addresses = _stub_addresses(answers)
    return resolution


async def resolve(hostname: str, config: DNSConfig, trace: Trace) -> tuple[list[DNSQuery], list[str]]:
    """The queries, and the addresses a stub resolver would use: from the reply it believes (the first,
    or the TCP one after truncation), A before AAAA, de-duplicated. Bogons are included: judging and
    skipping them is the caller's business. An IP literal needs no DNS: ``([], [ip])``."""
    resolution = await resolve_early(hostname, config, trace)
    return await resolution.queries(), resolution.addresses


MAX_REVERSE_NAMES = 8


async def reverse_names(address: str, config: DNSConfig, wait: float = 2.0) -> list[str]:
    """The host names the resolver gives for ``address`` (its PTR records), lower case, without the root
    dot; [] when there are none or the lookup fails in any way. One query over UDP, the first matching
    reply believed, at most ``wait`` seconds: the agent asks this once per pass, to know which names
    of its own to scrub, and measures nothing with it."""
    try:
        pointer = ipaddress.ip_address(address).reverse_pointer
        server = parse_resolver(config.resolver if config.resolver is not None else system_resolver())
    except (ValueError, OSError):
        return []
    query = make_query(pointer, "PTR")  # never the fast path (dns_wire): its replies are dnspython's
    quick = replace(config, timeout=min(config.timeout, wait), linger=0.0)
    received, _ = await _udp_exchange(query, server, quick, Trace())
    names: list[str] = []
    for _, msg in received[:1]:
        for rrset in msg.answer if isinstance(msg, dns.message.Message) else ():
            if rrset.rdtype != dns.rdatatype.PTR:
                continue
            for rdata in rrset:
                name = rdata.target.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
                if name and name not in names:
                    names.append(name)
    return names[:MAX_REVERSE_NAMES]

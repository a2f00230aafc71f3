"""The namespace lab's servers, one process per namespace: ``python -m gatewatch.lab.netns.services``.

``intl`` (the international namespace): the authoritative DNS for the scenario's names and one web server
for every site over http and https (certificates from the lab CA, chosen by SNI). Each answer leaves
``REPLY_DELAY`` after its request, as from a server far away, so that an on-path injector's forged packet
always arrives first and the real one after it, as on a real international path.

``resolver`` (an ISP router's namespace): the ISP's recursive resolver. It forwards each query to the
international DNS through the gateway and passes on the first reply it gets (as a plain forwarder does,
so the gateway's injection poisons it), except for the names the ISP blocks itself, which get NXDOMAIN.

The process prints ``ready`` on stdout once it listens, and runs until it is killed (its namespace's
removal kills it at the latest).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from ..certs import LabPKI
from .lifetime import MAX_RUNTIME, die_with_parent

__all__ = ["REPLY_DELAY", "ServiceConfig", "main"]

REPLY_DELAY = 0.1
FORWARD_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
MAX_REQUEST = 16384


@dataclass(frozen=True)
class ServiceConfig:
    role: str  # intl | resolver
    listen: str  # the DNS address
    records: dict[str, str]  # intl: name -> A record
    upstream: str = ""  # resolver: where to forward
    blocked: tuple[str, ...] = ()  # resolver: names answered NXDOMAIN
    certificates: dict[str, list[str]] | None = None  # intl: name -> [chain PEM path, key PEM path]

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        data = json.loads(text)
        data["blocked"] = tuple(data["blocked"])
        return cls(**data)


def _name(query: dns.message.Message) -> tuple[str, dns.rdatatype.RdataType] | None:
    if not query.question:
        return None
    question = query.question[0]
    return question.name.to_text().lower().rstrip("."), dns.rdatatype.RdataType(question.rdtype)


class _AuthoritativeDNS(asyncio.DatagramProtocol):
    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        asked = _name(query)
        if asked is None:
            return
        name, qtype = asked
        response = dns.message.make_response(query)
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif qtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", self.records[name]))
        wire = response.to_wire()
        asyncio.get_running_loop().call_later(REPLY_DELAY, self._send, wire, addr)

    def _send(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


class _ForwardingResolver(asyncio.DatagramProtocol):
    def __init__(self, upstream: str, blocked: tuple[str, ...]) -> None:
        self.upstream = upstream
        self.blocked = set(blocked)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        asked = _name(query)
        if asked is not None and asked[0] in self.blocked:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._send(response.to_wire(), addr)
            return
        asyncio.get_running_loop().create_task(self._forward(data, addr))

    async def _forward(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.setblocking(False)
            await loop.sock_connect(upstream, (self.upstream, 53))
            await loop.sock_sendall(upstream, data)
            try:
                reply = await asyncio.wait_for(loop.sock_recv(upstream, 4096), FORWARD_TIMEOUT)
            except TimeoutError:
                return
        self._send(reply, addr)

    def _send(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


def _page(host: str) -> bytes:
    paragraphs = "".join(f"<p>News item {n} of {host}, served from abroad.</p>" for n in range(12))
    body = f"<html><head><title>{host}</title></head><body><h1>{host}</h1>{paragraphs}</body></html>".encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: netlab\r\nX-Served-By: netlab-abroad\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        host = ""
        for line in head[:MAX_REQUEST].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "host":
                host = value.strip().split(":")[0]
        await asyncio.sleep(delay)
        writer.write(_page(host))
        await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _serve_tls(listener: socket.socket, tls: ssl.SSLContext) -> None:
    """Accept TLS connections whose ServerHello leaves REPLY_DELAY after the ClientHello could arrive."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def one(conn: socket.socket) -> None:
        await asyncio.sleep(REPLY_DELAY)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await asyncio.wait_for(
                loop.connect_accepted_socket(lambda: protocol, conn, ssl=tls), READ_TIMEOUT
            )
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()
            return
        await _serve_http(reader, asyncio.StreamWriter(transport, protocol, reader, loop), 0.0)

    while True:
        conn, _ = await loop.sock_accept(listener)
        task = loop.create_task(one(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _tls_context(pki: LabPKI) -> ssl.SSLContext:
    contexts = {name: pki.server_context(name) for name in pki.server_files}
    default = next(iter(contexts.values()))

    def select(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ssl_object.context = contexts.get((server_name or "").lower(), default)

    default.sni_callback = select
    return default


async def serve(config: ServiceConfig) -> None:
    loop = asyncio.get_running_loop()
    running: list[asyncio.Task[None]] = []  # held here, so the TLS accept loop is never collected
    if config.role == "intl":
        protocol: asyncio.DatagramProtocol = _AuthoritativeDNS(config.records)
        tls = _tls_context(LabPKI("", {name: (c, k) for name, (c, k) in (config.certificates or {}).items()}))
        await asyncio.start_server(lambda r, w: _serve_http(r, w, REPLY_DELAY), "0.0.0.0", 80)
        listener = socket.create_server(("0.0.0.0", 443), backlog=64)
        listener.setblocking(False)
        running.append(loop.create_task(_serve_tls(listener, tls)))
    else:
        protocol = _ForwardingResolver(config.upstream, config.blocked)
    await loop.create_datagram_endpoint(lambda: protocol, local_addr=(config.listen, 53))
    print("ready", flush=True)
    # Until killed (the lab's close()), and at most MAX_RUNTIME: a crashed run leaves nothing for long.
    await asyncio.sleep(MAX_RUNTIME)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    asyncio.run(serve(ServiceConfig.from_json(Path(args[0]).read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()

"""Minimal loopback servers for the I/O probe tests: a DNS resolver, TCP oddities, TLS and HTTP servers.

Everything listens on 127.0.0.1 (random ports) and answers only what a test asks for. The full emulated
censored network lives in lab/; these fixtures are deliberately small and explicit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
# The address an injector's forged reply points at (a private range the probe must never visit).
FORGED_ADDRESS = "10.10.34.35"


# --------------------------------------------------------------------------------------------- DNS


@dataclass
class FakeResolver:
    """A stub-facing resolver on UDP and TCP. ``zone`` maps names to addresses (A and AAAA by form);
    ``behaviours`` maps names to "nxdomain", "servfail", "refused", "inject", "truncate" or "silent"."""

    zone: dict[str, list[str]] = field(default_factory=dict)
    cnames: dict[str, str] = field(default_factory=dict)
    pointers: dict[str, list[str]] = field(default_factory=dict)  # reverse-pointer name -> PTR targets
    behaviours: dict[str, str] = field(default_factory=dict)
    # (name, type, source ip, transport) of every query received.
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # every UDP reply's wire bytes, in sending order
    port: int = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def answer(self, query: dns.message.Message, *, over_tcp: bool) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        behaviour = self.behaviours.get(name, "answer")
        response = dns.message.make_response(query)
        if behaviour == "silent":
            return None
        if behaviour in ("nxdomain", "servfail", "refused"):
            response.set_rcode(dns.rcode.from_text(behaviour.upper()))
            return response
        if behaviour == "truncate" and not over_tcp:
            response.flags |= dns.flags.TC
            return response
        if question.rdtype == dns.rdatatype.PTR and name in self.pointers:
            targets = [t + "." for t in self.pointers[name]]
            response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "PTR", *targets))
            return response
        target = self.cnames.get(name)
        if target is not None:
            rrset = dns.rrset.from_text(question.name, 60, "IN", "CNAME", target + ".")
            response.answer.append(rrset)
            name = target
        for address in self.zone.get(name, []):
            rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
            if dns.rdatatype.from_text(rdtype) == question.rdtype:
                response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", rdtype, address))
        return response


class _ResolverUDP(asyncio.DatagramProtocol):
    def __init__(self, resolver: FakeResolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport, by construction

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        self.resolver.seen.append((name, dns.rdatatype.to_text(question.rdtype), addr[0], "udp"))
        response = self.resolver.answer(query, over_tcp=False)
        if response is None:
            return
        if self.resolver.behaviours.get(name) == "inject":
            # An on-path injector: a forged answer at once, the resolver's real one 30 ms later.
            forged = dns.message.make_response(query)
            if question.rdtype == dns.rdatatype.A:
                forged.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", FORGED_ADDRESS))
            self.send(forged.to_wire(), addr)
            asyncio.get_running_loop().call_later(0.03, self.send, response.to_wire(), addr)
            return
        self.send(response.to_wire(), addr)

    def send(self, wire: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.resolver.sent.append(wire)
        self.transport.sendto(wire, addr)


async def _resolver_tcp(
    resolver: FakeResolver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        size = int.from_bytes(await reader.readexactly(2), "big")
        query = dns.message.from_wire(await reader.readexactly(size))
        question = query.question[0]
        peer = writer.get_extra_info("peername")[0]
        name = question.name.to_text(omit_final_dot=True)
        resolver.seen.append((name, dns.rdatatype.to_text(question.rdtype), peer, "tcp"))
        response = resolver.answer(query, over_tcp=True)
        if response is not None:
            wire = response.to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    writer.close()


@pytest.fixture
async def resolver() -> AsyncIterator[FakeResolver]:
    """A fake resolver listening on UDP and TCP at the same loopback port."""
    loop = asyncio.get_running_loop()
    fake = FakeResolver()
    # Take a free UDP port, then the same TCP port (retry a few times if TCP's is taken).
    for _ in range(10):
        transport, _proto = await loop.create_datagram_endpoint(
            lambda: _ResolverUDP(fake), local_addr=(LOOPBACK, 0)
        )
        fake.port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(
                lambda r, w: _resolver_tcp(fake, r, w), LOOPBACK, fake.port, reuse_address=False
            )
            break
        except OSError:
            transport.close()
    else:
        pytest.fail("no free port pair for the fake resolver")
    try:
        yield fake
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------------------------- TCP


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on loopback but not listening: a connect there is refused."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_udp_port() -> int:
    """A UDP port nobody listens on (bound, then released): the kernel answers port-unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A listener whose accept queue is full (listen(0), filled and never accepted): SYNs are dropped."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.1)
            fillers.append(filler)
            try:
                filler.connect((LOOPBACK, port))
            except OSError:
                break  # the queue is full: this SYN was dropped
        else:
            pytest.fail("the accept queue never filled up")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class PKI:
    ca_file: Path  # the test CA, as a probe's TLSConfig.ca_file
    valid: tuple[Path, Path]  # (cert chain, key) for site.test, other.test and 127.0.0.1, signed by the CA
    expired: tuple[Path, Path]  # the same names, signed by the CA, validity in the past
    self_signed: tuple[Path, Path]  # site.test, signed by itself
    via_intermediate: tuple[Path, Path]  # leaf signed by an intermediate CA; the file holds both
    missing_intermediate: tuple[Path, Path]  # the same leaf served without its intermediate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _leaf(
    subject_key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    # The Web PKI profile the probe validates with wants SAN, EKU, key usage and both key identifiers.
    return (
        x509.CertificateBuilder()
        .subject_name(_name("site.test"))
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("site.test"),
                    x509.DNSName("other.test"),
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("gatewatch test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    valid = _leaf(leaf_key, ca_name, ca_key, now - timedelta(hours=1), now + timedelta(days=7))
    expired = _leaf(leaf_key, ca_name, ca_key, now - timedelta(days=10), now - timedelta(days=2))
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = _name("gatewatch test intermediate")
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(inter_name)
        .issuer_name(ca_name)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chained = _leaf(leaf_key, inter_name, inter_key, now - timedelta(hours=1), now + timedelta(days=7))
    missing_intermediate = _write(directory, "missing-intermediate", chained, leaf_key)
    via_intermediate = _write(directory, "via-intermediate", chained, leaf_key)
    with via_intermediate[0].open("ab") as chain_file:
        chain_file.write(intermediate.public_bytes(serialization.Encoding.PEM))
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _leaf(
        self_key, _name("site.test"), self_key, now - timedelta(hours=1), now + timedelta(days=7)
    )
    return PKI(
        ca_file=ca_file,
        valid=_write(directory, "valid", valid, leaf_key),
        expired=_write(directory, "expired", expired, leaf_key),
        self_signed=_write(directory, "self-signed", self_signed, self_key),
        via_intermediate=via_intermediate,
        missing_intermediate=missing_intermediate,
    )


def server_context(cert_and_key: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_and_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


# -------------------------------------------------------------------------------------- HTTP / raw


@dataclass
class LoopbackHTTPServer:
    """A tiny HTTP/1.1 server; what it answers depends on the path. Records each request head."""

    port: int = 0
    requests: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    body_size: int = 5000  # of /big

    def respond(self, target: str) -> bytes | None:
        """The raw response for ``target``; None means: send nothing (the handler decides how to end)."""
        target = target.split("?", 1)[0]
        if target == "/":
            body = b"<html><head><TITLE>\n  Caf\xc3\xa9 &amp;   Friends\t</TITLE></head><body>hi</body>"
            return _response(
                200, body, [("Content-Type", "text/html; charset=utf-8"), ("X-Served-By", "Lab")]
            )
        if target.startswith("/redirect/"):
            remaining = int(target.rsplit("/", 1)[1])
            if remaining == 0:
                return _response(200, b"<title>arrived</title>")
            return _response(302, b"", [("Location", f"/redirect/{remaining - 1}")])
        if target.startswith("/to/"):  # /to/<absolute URL without scheme>: cross-host redirect
            return _response(301, b"", [("Location", "http://" + target.removeprefix("/to/"))])
        if target == "/loop":
            return _response(302, b"", [("Location", "/loop")])
        if target == "/big":
            return _response(200, b"x" * self.body_size)
        if target == "/garbage":
            return b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n"
        if target == "/short":  # promises more body than it sends, then closes
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
        return None  # "/reset", "/close", "/silent"


def _response(code: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> bytes:
    reason = {200: "OK", 301: "Moved Permanently", 302: "Found"}[code]
    lines = [f"HTTP/1.1 {code} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ServerSet:
    """Starts servers on loopback and tears every one (and every handler) down at the end."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass  # the probe hung up (or failed the handshake on purpose): nothing to do
            except asyncio.CancelledError:
                writer.transport.abort()  # teardown: no goodbyes
                raise
            finally:
                writer.close()  # a FIN (and close_notify over TLS): the end of a response
                self.handlers.discard(task)

        server = await asyncio.start_server(tracked, LOOPBACK, 0, ssl=ssl_context)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[ServerSet]:
    started = ServerSet()
    try:
        yield started
    finally:
        await started.close()


async def _serve_http(
    http: LoopbackHTTPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    target = request_line.split(" ")[1]
    headers = [tuple(line.split(": ", 1)) for line in header_lines if line]
    http.requests.append((target, headers))  # type: ignore[arg-type]
    raw = http.respond(target)
    if raw is not None:
        writer.write(raw)
        await writer.drain()
    elif target == "/reset":
        reset(writer)
    elif target == "/silent":
        await asyncio.sleep(30)  # cancelled at teardown


@pytest.fixture
async def http_server(servers: ServerSet) -> LoopbackHTTPServer:
    http = LoopbackHTTPServer()
    http.port = await servers.start(lambda r, w: _serve_http(http, r, w))
    return http


@pytest.fixture
async def https_server(servers: ServerSet, pki: PKI) -> LoopbackHTTPServer:
    """The same HTTP server behind TLS with the CA-signed certificate for site.test/other.test."""
    http = LoopbackHTTPServer()
    http.port = await servers.start(lambda r, w: _serve_http(http, r, w), server_context(pki.valid))
    return http

"""The TLS handshake probe against loopback servers: valid, invalid certificates, and interference."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.core import failures
from gatewatch.core.observations import TLSHandshake
from gatewatch.probes import tcp, tls
from gatewatch.probes.config import TCPConfig, TLSConfig
from gatewatch.probes.connection import TLSConnection
from gatewatch.probes.trace import Trace

from .conftest import LOOPBACK, PKI, ServerSet, reset, server_context

# A TLS alert record: fatal (2), handshake_failure (40).
HANDSHAKE_FAILURE_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])

Shake = Callable[..., Awaitable[tuple[TLSHandshake, TLSConnection | None]]]


@pytest.fixture
async def shake() -> AsyncIterator[Shake]:
    """Connect to a loopback port and hand the socket to tls.handshake; close what comes back."""
    opened: list[TLSConnection] = []

    async def run(
        port: int, server_name: str = "site.test", **settings: object
    ) -> tuple[TLSHandshake, TLSConnection | None]:
        trace = Trace()
        record, sock = await tcp.connect(LOOPBACK, port, TCPConfig(timeout=1.0), trace)
        assert sock is not None, record
        config = TLSConfig(**{"timeout": 2.0, **settings})  # type: ignore[arg-type]
        handshake, conn = await tls.handshake(sock, f"{LOOPBACK}:{port}", server_name, config, trace)
        if conn is None:
            assert sock.fileno() == -1, "a failed handshake closes its socket"
        else:
            opened.append(conn)
        return handshake, conn

    yield run
    for conn in opened:
        conn.close()


async def tls_server(servers: ServerSet, cert_and_key: tuple[Path, Path]) -> int:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # keep the connection open until the client goes

    return await servers.start(idle, server_context(cert_and_key))


async def raw_server(
    servers: ServerSet, after_hello: Callable[[asyncio.StreamWriter], Awaitable[None]], hellos: list[bytes]
) -> int:
    """A server that reads the ClientHello's first bytes (into ``hellos``), then does ``after_hello``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hellos.append(await reader.read(5))
        await after_hello(writer)

    return await servers.start(handler)


async def test_valid_certificate(shake: Shake, servers: ServerSet, pki: PKI) -> None:
    port = await tls_server(servers, pki.valid)
    record, conn = await shake(port, ca_file=str(pki.ca_file))
    assert conn is not None and conn.validated is True
    assert (record.failure, record.failure_stage, record.validated) == (None, None, True)
    assert record.address == f"{LOOPBACK}:{port}" and record.server_name == "site.test"
    assert record.tls_version == "TLSv1.3" and record.cipher_suite
    assert record.negotiated_protocol == "http/1.1"
    assert 0 <= record.t0 <= record.t
    [leaf] = record.peer_certificates
    expected = x509.load_pem_x509_certificate(pki.valid[0].read_bytes())
    assert leaf.subject == "CN=site.test" and leaf.issuer == "CN=gatewatch test CA"
    assert leaf.sans == ["site.test", "other.test", "127.0.0.1"]
    assert leaf.sha256 == hashlib.sha256(expected.public_bytes(Encoding.DER)).hexdigest()
    assert leaf.not_after == expected.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf.not_before.endswith("Z")


async def test_chain_with_an_intermediate(shake: Shake, servers: ServerSet, pki: PKI) -> None:
    port = await tls_server(servers, pki.via_intermediate)
    record, conn = await shake(port, ca_file=str(pki.ca_file))
    assert record.failure is None and record.validated and conn is not None
    assert [(c.subject, c.issuer) for c in record.peer_certificates] == [
        ("CN=site.test", "CN=gatewatch test intermediate"),
        ("CN=gatewatch test intermediate", "CN=gatewatch test CA"),
    ]


async def test_ip_literal_is_validated_against_ip_sans(shake: Shake, servers: ServerSet, pki: PKI) -> None:
    port = await tls_server(servers, pki.valid)
    record, conn = await shake(port, server_name=LOOPBACK, ca_file=str(pki.ca_file))
    assert record.failure is None and record.validated and conn is not None


async def test_without_alpn_nothing_is_negotiated(shake: Shake, servers: ServerSet, pki: PKI) -> None:
    port = await tls_server(servers, pki.valid)
    record, _ = await shake(port, ca_file=str(pki.ca_file), alpn=())
    assert record.failure is None and record.negotiated_protocol is None


@pytest.mark.parametrize(
    ("certificate", "server_name", "use_ca", "failure"),
    [
        ("valid", "wrong.test", True, failures.SSL_INVALID_HOSTNAME),
        ("self_signed", "site.test", True, failures.SSL_UNKNOWN_AUTHORITY),
        ("valid", "site.test", False, failures.SSL_UNKNOWN_AUTHORITY),  # the system roots do not know our CA
        ("expired", "site.test", True, failures.SSL_INVALID_CERTIFICATE),
        ("missing_intermediate", "site.test", True, failures.SSL_UNKNOWN_AUTHORITY),
    ],
)
async def test_invalid_certificates_are_recorded_with_their_chain(
    shake: Shake, servers: ServerSet, pki: PKI, certificate: str, server_name: str, use_ca: bool, failure: str
) -> None:
    port = await tls_server(servers, getattr(pki, certificate))
    settings = {"ca_file": str(pki.ca_file)} if use_ca else {}
    record, conn = await shake(port, server_name=server_name, **settings)
    assert (record.failure, record.validated, record.failure_stage) == (
        failure,
        False,
        "certificate_validation",
    )
    assert record.tls_version == "TLSv1.3"
    assert [c.subject for c in record.peer_certificates] == ["CN=site.test"]  # recorded although invalid
    # The handshake itself completed; the connection comes back marked unvalidated (web.py won't use it).
    assert conn is not None and conn.validated is False


async def test_reset_after_client_hello(shake: Shake, servers: ServerSet) -> None:
    async def rst(writer: asyncio.StreamWriter) -> None:
        reset(writer)

    hellos: list[bytes] = []
    record, conn = await shake(await raw_server(servers, rst, hellos))
    assert hellos[0][:1] == b"\x16"  # the server saw a TLS handshake record before resetting
    assert conn is None
    assert (record.failure, record.failure_stage) == (failures.CONNECTION_RESET, "after_client_hello")
    assert record.peer_certificates == [] and record.tls_version is None and not record.validated


async def test_eof_after_client_hello(shake: Shake, servers: ServerSet) -> None:
    async def close(writer: asyncio.StreamWriter) -> None:
        writer.close()

    record, conn = await shake(await raw_server(servers, close, []))
    assert conn is None
    assert (record.failure, record.failure_stage) == (failures.EOF_ERROR, "after_client_hello")


async def test_silence_after_client_hello_is_a_timeout(shake: Shake, servers: ServerSet) -> None:
    async def wait(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # cancelled at teardown

    record, conn = await shake(await raw_server(servers, wait, []), timeout=0.3)
    assert conn is None
    assert (record.failure, record.failure_stage) == (failures.GENERIC_TIMEOUT_ERROR, "after_client_hello")
    assert 0.3 <= record.t - record.t0 < 3.0


async def test_alert_is_a_failed_handshake(shake: Shake, servers: ServerSet) -> None:
    async def alert(writer: asyncio.StreamWriter) -> None:
        writer.write(HANDSHAKE_FAILURE_ALERT)
        await writer.drain()
        await asyncio.sleep(30)

    record, conn = await shake(await raw_server(servers, alert, []))
    assert conn is None
    assert (record.failure, record.failure_stage) == (failures.SSL_FAILED_HANDSHAKE, "during_handshake")


async def test_non_tls_answer_is_a_failed_handshake(shake: Shake, servers: ServerSet) -> None:
    async def http_answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    record, conn = await shake(await raw_server(servers, http_answer, []))
    assert conn is None
    assert (record.failure, record.failure_stage) == (failures.SSL_FAILED_HANDSHAKE, "during_handshake")


async def test_client_hello_carries_the_sni(servers: ServerSet) -> None:
    seen: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(4096))
        reset(writer)

    port = await servers.start(capture)
    trace = Trace()
    _, sock = await tcp.connect(LOOPBACK, port, TCPConfig(timeout=1.0), trace)
    assert sock is not None
    record, conn = await tls.handshake(
        sock, f"{LOOPBACK}:{port}", "blocked.test", TLSConfig(timeout=1.0), trace
    )
    assert conn is None and record.failure == failures.CONNECTION_RESET
    assert b"blocked.test" in seen[0]


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_validate_chain_without_a_socket(pki: PKI) -> None:
    valid, expired, self_signed = (_load(p[0]) for p in (pki.valid, pki.expired, pki.self_signed))
    ca = str(pki.ca_file)
    assert tls.validate_chain([valid], "site.test", ca) is None
    assert tls.validate_chain([valid], "other.test", ca) is None
    assert tls.validate_chain([valid], "wrong.test", ca) == failures.SSL_INVALID_HOSTNAME
    assert tls.validate_chain([self_signed], "site.test", ca) == failures.SSL_UNKNOWN_AUTHORITY
    assert tls.validate_chain([expired], "site.test", ca) == failures.SSL_INVALID_CERTIFICATE
    assert tls.validate_chain([], "site.test", ca) == failures.SSL_INVALID_CERTIFICATE


def test_missing_ca_file_is_a_config_error(pki: PKI) -> None:
    valid = _load(pki.valid[0])
    with pytest.raises(OSError):
        tls.validate_chain([valid], "site.test", str(pki.ca_file) + ".absent")


def test_certificates_described_again_come_from_a_bounded_cache_identical_to_parsing_anew(pki: PKI) -> None:
    ders = [
        cert.public_bytes(Encoding.DER)
        for paths in (pki.valid, pki.expired, pki.self_signed, pki.via_intermediate)
        for cert in x509.load_pem_x509_certificates(paths[0].read_bytes())
    ]
    ders.append(b"\x30\x03not a certificate")  # recorded by hash and bytes, never parsed
    tls._describe.cache_clear()
    for der in ders * 2:
        record, parsed = tls._describe(der)
        fresh_record, fresh_parsed = tls._describe.__wrapped__(der)
        assert record == fresh_record and parsed == fresh_parsed
        assert record.sha256 == hashlib.sha256(der).hexdigest()
    assert tls._describe.cache_info().hits == len(ders)
    limit = tls._describe.cache_info().maxsize
    for i in range(limit + 10):  # more distinct certificates than it keeps: it stays at its bound
        tls._describe(b"\x30\x03bad%d" % i)
    assert tls._describe.cache_info().currsize == limit
    tls._describe.cache_clear()


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_certificate_times_are_written_as_strftime_writes_them(value) -> None:
    """tls._iso spares strftime for four-digit years: the same text as strftime, whatever the time zone."""
    from datetime import UTC

    from gatewatch.probes.tls import _iso

    assert _iso(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

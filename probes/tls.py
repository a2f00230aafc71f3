"""TLS handshake probe: drive the handshake over a socket the probe owns, record it, validate the chain.

Why memory BIOs: the probe writes every record itself, so it knows whether the ClientHello had left when
a reset, an EOF or a timeout arrived ("after_client_hello" is what SNI-based blocking looks like).

Why validate afterwards with ``cryptography.x509.verification`` instead of letting OpenSSL verify: a
failed OpenSSL verification aborts the handshake and (before Python 3.13) hides the chain, yet a censor's
certificate is exactly what researchers want recorded. Handshaking once without verification and then
validating the recorded chain keeps one ClientHello on the wire (a second, validating handshake would
show a censor two attempts and double the time) and always records the chain. The verifier follows the
Web PKI profile, as browsers do.

Why cryptography is imported inside the functions that parse or validate certificates: its X.509 layer
costs several MiB of resident memory, and a process that imports the probes but never completes a TLS
handshake (a cleartext-only list, a CLI that only lists results) should not pay for it.
"""

from __future__ import annotations

import _ssl
import asyncio
import base64
import hashlib
import ipaddress
import os
import socket
import ssl
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from gatewatch.core import failures
from gatewatch.core.observations import Certificate, TLSHandshake

from .config import TLSConfig
from .connection import TLSConnection, may_be_ip_literal
from .trace import Trace

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.verification import DNSName, IPAddress, Store

__all__ = ["handshake", "validate_chain"]

# Each round reads at least one byte, and the whole handshake is under config.timeout; this bound only
# stops a peer trickling bytes from spinning the loop indefinitely.
_MAX_ROUNDS = 4096
_MAX_CHAIN = 10  # certificates recorded and used for validation
_MAX_NAME_PROBES = 4  # leaf names tried when telling a wrong hostname from a bad chain
_DESCRIBED = 128  # certificates remembered with their record (a few hundred kB at most)

STAGE_BEFORE_CLIENT_HELLO = "before_client_hello"
STAGE_AFTER_CLIENT_HELLO = "after_client_hello"
STAGE_DURING_HANDSHAKE = "during_handshake"
STAGE_CERTIFICATE_VALIDATION = "certificate_validation"


@lru_cache(maxsize=16)
def _context(alpn: tuple[str, ...]) -> ssl.SSLContext:
    # Verification off on purpose: see the module docstring; validate_chain() does it afterwards.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _split_pem(data: bytes) -> list[x509.Certificate]:
    from cryptography import x509

    # One unparseable entry in a system bundle must not make every root unusable.
    roots = []
    marker = b"-----END CERTIFICATE-----"
    for block in data.split(marker):
        if b"-----BEGIN CERTIFICATE-----" not in block:
            continue
        try:
            with warnings.catch_warnings():
                # Some distributions' bundles hold old roots that newer cryptography frowns upon.
                warnings.simplefilter("ignore")
                roots.append(x509.load_pem_x509_certificate(block + marker))
        except ValueError:
            continue
    return roots


@dataclass(frozen=True)
class _Trust:
    """The trust anchors, with what every validation needs of them built once (a Store of the system's
    ~150 roots takes about a millisecond to build: per handshake, that was most of the validation)."""

    roots: tuple[x509.Certificate, ...]
    store: Store | None  # None without roots: nothing validates
    subjects: frozenset[x509.Name]
    fingerprints: frozenset[bytes]


@lru_cache(maxsize=8)
def _load_trust(path: str, mtime_ns: int, size: int) -> _Trust:
    # Keyed by mtime and size too, so that a lab regenerating its CA at the same path is noticed.
    return _trust_of(tuple(_split_pem(Path(path).read_bytes())))


def _trust_of(roots: tuple[x509.Certificate, ...]) -> _Trust:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.verification import Store

    return _Trust(
        roots=roots,
        store=Store(list(roots)) if roots else None,
        subjects=frozenset(root.subject for root in roots),
        fingerprints=frozenset(root.fingerprint(hashes.SHA256()) for root in roots),
    )


def _trust(ca_file: str | None) -> _Trust:
    """The trust anchors: ``ca_file`` (a missing one is a config error and raises) or the system's."""
    if not ca_file:
        paths = ssl.get_default_verify_paths()  # not per handshake when a CA file is given: it reads the env
        path = paths.cafile or paths.openssl_cafile
    else:
        path = ca_file
    try:
        stat = os.stat(path)  # per handshake: os.stat is half of Path.stat's cost
        return _load_trust(path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        if ca_file is not None:
            raise
        return _trust_of(())  # no readable system bundle: nothing validates, which is reported, not hidden


def _subject(server_name: str) -> DNSName | IPAddress:
    from cryptography.x509.verification import DNSName, IPAddress

    if may_be_ip_literal(server_name):
        try:
            return IPAddress(ipaddress.ip_address(server_name))
        except ValueError:
            pass
    return DNSName(server_name)


def _verifies(chain: list[x509.Certificate], trust: _Trust, name: str) -> bool:
    from cryptography.x509.verification import PolicyBuilder, VerificationError

    if trust.store is None:
        return False
    try:
        verifier = PolicyBuilder().store(trust.store).time(datetime.now(UTC))
        verifier.build_server_verifier(_subject(name)).verify(chain[0], chain[1:])
    except (VerificationError, ValueError):
        return False
    return True


def _leaf_names(leaf: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    names = [n.replace("*.", "wildcard.", 1) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names[:_MAX_NAME_PROBES]


def validate_chain(chain: list[x509.Certificate], server_name: str, ca_file: str | None) -> str | None:
    """None when ``chain`` (leaf first) is valid for ``server_name``, else the failure string.

    The classification follows OpenSSL's order (chain first, then name, then the rest): a chain that
    would be valid for another of the leaf's names is a wrong hostname; a chain with no trusted issuer
    is an unknown authority; anything else (expiry, usage, a bad signature) an invalid certificate.
    """
    from cryptography.hazmat.primitives import hashes

    if not chain:
        return failures.SSL_INVALID_CERTIFICATE
    trust = _trust(ca_file)
    if _verifies(chain, trust, server_name):
        return None
    if any(_verifies(chain, trust, name) for name in _leaf_names(chain[0])):
        return failures.SSL_INVALID_HOSTNAME
    anchored = any(
        cert.issuer in trust.subjects or cert.fingerprint(hashes.SHA256()) in trust.fingerprints
        for cert in chain
    )
    return failures.SSL_INVALID_CERTIFICATE if anchored else failures.SSL_UNKNOWN_AUTHORITY


def _iso(value: datetime) -> str:
    """``value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")`` without strftime's cost (twice per
    certificate) for four-digit years; before year 1000, what the platform's %Y writes differs (padded or
    not): strftime's own."""
    v = value.astimezone(UTC)
    if v.year < 1000:
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{v.year}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


@lru_cache(maxsize=_DESCRIBED)
def _describe(der: bytes) -> tuple[Certificate, x509.Certificate | None]:
    """The record of one certificate, and the certificate parsed (None when it does not parse). Both are
    immutable, so a certificate met again (a site's other URLs, a shared intermediate) is described once."""
    from cryptography import x509

    sha256 = hashlib.sha256(der).hexdigest()
    der_b64 = base64.b64encode(der).decode()
    try:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = list(san.get_values_for_type(x509.DNSName))
            sans += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            sans = []
        record = Certificate(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=sans,
            not_before=_iso(cert.not_valid_before_utc),
            not_after=_iso(cert.not_valid_after_utc),
            sha256=sha256,
            der_b64=der_b64,
        )
    except ValueError:
        # Still recorded (by hash and bytes): a malformed certificate is itself a finding.
        return Certificate(
            subject="", issuer="", not_before="", not_after="", sha256=sha256, der_b64=der_b64
        ), None
    return record, cert


def _peer_chain(tls: ssl.SSLObject) -> list[bytes]:
    """The chain as the server sent it (leaf first), DER."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        return [bytes(cert) for cert in public() or []]
    private = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)  # 3.10-3.12
    if private is not None:
        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in private() or []]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class _Progress:
    """How far the handshake got, for failure_stage."""

    def __init__(self) -> None:
        self.client_hello_sent = False
        self.server_bytes = 0

    @property
    def stage(self) -> str:
        if not self.client_hello_sent:
            return STAGE_BEFORE_CLIENT_HELLO
        return STAGE_AFTER_CLIENT_HELLO if self.server_bytes == 0 else STAGE_DURING_HANDSHAKE


async def _drive(conn: TLSConnection, progress: _Progress) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(_MAX_ROUNDS):
        try:
            conn.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:
            await conn.flush()  # the client's Finished (TLS 1.3) leaves with the last call
            return
        data = conn.outgoing.read()
        if data:
            await loop.sock_sendall(conn.sock, data)
            progress.client_hello_sent = True
        chunk = await loop.sock_recv(conn.sock, 65536)
        if chunk:
            progress.server_bytes += len(chunk)
            conn.incoming.write(chunk)
        else:
            conn.incoming.write_eof()  # the next do_handshake() raises SSLEOFError -> eof_error
    raise ssl.SSLError("TLS handshake did not finish within its round limit")


async def handshake(
    sock: socket.socket, address: str, server_name: str, config: TLSConfig, trace: Trace
) -> tuple[TLSHandshake, TLSConnection | None]:
    """TLS handshake on a connected socket, with SNI ``server_name`` (none for an IP literal).

    Takes ownership of ``sock``: on failure it is closed and the connection is None; otherwise the
    returned connection owns it. A completed handshake whose chain does not validate is returned with
    ``validated=False`` (and the failure recorded); such a connection must not carry a request.
    """
    t0 = trace.now()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _context(tuple(config.alpn)).wrap_bio(incoming, outgoing, server_hostname=server_name or None)
    conn = TLSConnection(sock, address, tls, incoming, outgoing, validated=False)
    progress = _Progress()
    try:
        async with asyncio.timeout(config.timeout):
            await _drive(conn, progress)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        sock.close()
        record = TLSHandshake(
            address=address,
            server_name=server_name,
            t0=t0,
            t=trace.now(),
            failure=failures.classify(exc),
            failure_stage=progress.stage,
        )
        return record, None
    except BaseException:
        sock.close()
        raise

    try:
        described = [_describe(der) for der in _peer_chain(tls)[:_MAX_CHAIN]]
        chain = [cert for _, cert in described if cert is not None]
        failure = validate_chain(chain, server_name, config.ca_file)
    except BaseException:
        conn.close()  # an unreadable ca_file is a config error: raise, but leak no socket
        raise
    conn.validated = failure is None
    cipher = tls.cipher()
    record = TLSHandshake(
        address=address,
        server_name=server_name,
        t0=t0,
        t=trace.now(),
        failure=failure,
        tls_version=tls.version(),
        cipher_suite=cipher[0] if cipher else None,
        negotiated_protocol=tls.selected_alpn_protocol(),
        peer_certificates=[record for record, _ in described],
        validated=conn.validated,
        failure_stage=STAGE_CERTIFICATE_VALIDATION if failure else None,
    )
    return record, conn

"""The failure vocabulary: OONI's strings, and the one function that maps exceptions onto them.

A network failure is the *result* of a measurement, not an error of the program: probes catch what the
network throws at them and record one of these strings. Researchers and dashboards key on them, so a
string here is never renamed (see docs/architecture.md, "Names worth keeping stable").
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Final

__all__ = [
    "ALL_FAILURES",
    "CONNECTION_REFUSED",
    "CONNECTION_RESET",
    "DNS_BOGON_ERROR",
    "DNS_NO_ANSWER",
    "DNS_NXDOMAIN_ERROR",
    "DNS_REFUSED_ERROR",
    "DNS_SERVFAIL_ERROR",
    "EOF_ERROR",
    "GENERIC_TIMEOUT_ERROR",
    "HOST_UNREACHABLE",
    "HTTP_INVALID_RESPONSE",
    "HTTP_TOO_MANY_REDIRECTS",
    "NETWORK_UNREACHABLE",
    "SSL_FAILED_HANDSHAKE",
    "SSL_INVALID_CERTIFICATE",
    "SSL_INVALID_HOSTNAME",
    "SSL_UNKNOWN_AUTHORITY",
    "UNKNOWN_FAILURE",
    "classify",
]

CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_RESET: Final = "connection_reset"
CONNECTION_ABORTED: Final = "connection_aborted"
GENERIC_TIMEOUT_ERROR: Final = "generic_timeout_error"
EOF_ERROR: Final = "eof_error"
HOST_UNREACHABLE: Final = "host_unreachable"
NETWORK_UNREACHABLE: Final = "network_unreachable"
ADDRESS_NOT_AVAILABLE: Final = "address_not_available"
DNS_NXDOMAIN_ERROR: Final = "dns_nxdomain_error"
DNS_REFUSED_ERROR: Final = "dns_refused_error"
DNS_SERVFAIL_ERROR: Final = "dns_servfail_error"
DNS_NO_ANSWER: Final = "dns_no_answer"
DNS_BOGON_ERROR: Final = "dns_bogon_error"
DNS_NON_RECURSIVE: Final = "dns_non_recursive_no_answer"
DNS_REPLY_FROM_UNEXPECTED_ADDR: Final = "dns_reply_from_unexpected_addr"
SSL_INVALID_HOSTNAME: Final = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY: Final = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE: Final = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE: Final = "ssl_failed_handshake"
HTTP_INVALID_RESPONSE: Final = "http_invalid_response"
HTTP_TOO_MANY_REDIRECTS: Final = "http_too_many_redirects"
INTERRUPTED: Final = "interrupted"
UNKNOWN_FAILURE: Final = "unknown_failure"

ALL_FAILURES: Final[frozenset[str]] = frozenset(
    {
        CONNECTION_REFUSED,
        CONNECTION_RESET,
        CONNECTION_ABORTED,
        GENERIC_TIMEOUT_ERROR,
        EOF_ERROR,
        HOST_UNREACHABLE,
        NETWORK_UNREACHABLE,
        ADDRESS_NOT_AVAILABLE,
        DNS_NXDOMAIN_ERROR,
        DNS_REFUSED_ERROR,
        DNS_SERVFAIL_ERROR,
        DNS_NO_ANSWER,
        DNS_BOGON_ERROR,
        DNS_NON_RECURSIVE,
        DNS_REPLY_FROM_UNEXPECTED_ADDR,
        SSL_INVALID_HOSTNAME,
        SSL_UNKNOWN_AUTHORITY,
        SSL_INVALID_CERTIFICATE,
        SSL_FAILED_HANDSHAKE,
        HTTP_INVALID_RESPONSE,
        HTTP_TOO_MANY_REDIRECTS,
        INTERRUPTED,
        UNKNOWN_FAILURE,
    }
)

_ERRNO_FAILURES: Final[dict[int, str]] = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_ABORTED,
    errno.EPIPE: CONNECTION_RESET,
    errno.ETIMEDOUT: GENERIC_TIMEOUT_ERROR,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.EADDRNOTAVAIL: ADDRESS_NOT_AVAILABLE,
}

# OpenSSL verify codes (X509_V_ERR_*) that mean "nobody we trust signed this".
_UNKNOWN_AUTHORITY_CODES: Final = frozenset({2, 18, 19, 20, 21})
# X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate is for another name.
_NAME_MISMATCH_CODES: Final = frozenset({62, 64})


def _classify_ssl(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code in _NAME_MISMATCH_CODES:
            return SSL_INVALID_HOSTNAME
        if code in _UNKNOWN_AUTHORITY_CODES:
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EOF_ERROR
    text = str(exc).lower()
    if "connection reset" in text:
        return CONNECTION_RESET
    if "unexpected eof" in text or "eof occurred" in text:
        return EOF_ERROR
    return SSL_FAILED_HANDSHAKE


def classify(exc: BaseException) -> str:
    """Return the failure string for an exception raised by a network operation.

    Unknown exceptions map to ``unknown_failure``; nothing is ever re-raised from here.
    """
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | socket.timeout):
        return GENERIC_TIMEOUT_ERROR
    if isinstance(exc, asyncio.IncompleteReadError):
        return EOF_ERROR
    if isinstance(exc, ssl.SSLError):
        return _classify_ssl(exc)
    if isinstance(exc, socket.gaierror):
        return DNS_NXDOMAIN_ERROR if exc.errno == socket.EAI_NONAME else UNKNOWN_FAILURE
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionAbortedError):
        return CONNECTION_ABORTED
    if isinstance(exc, EOFError):
        return EOF_ERROR
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_FAILURES.get(exc.errno, UNKNOWN_FAILURE)
    return UNKNOWN_FAILURE

"""Exceptions map onto OONI's failure strings; nothing escapes unclassified."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from gatewatch.core import failures


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), "generic_timeout_error"),
        (TimeoutError(), "generic_timeout_error"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (OSError(errno.EHOSTUNREACH, "no route"), "host_unreachable"),
        (OSError(errno.ENETUNREACH, "unreachable"), "network_unreachable"),
        (asyncio.IncompleteReadError(b"", 10), "eof_error"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "eof_error"),
        (ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] alert"), "ssl_failed_handshake"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns_nxdomain_error"),
        (ValueError("anything else"), "unknown_failure"),
    ],
)
def test_classify(exc: BaseException, expected: str) -> None:
    assert failures.classify(exc) == expected
    assert expected in failures.ALL_FAILURES


def _verify_error(code: int) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_code = code
    return err


@pytest.mark.parametrize(
    ("code", "expected"),
    [(62, "ssl_invalid_hostname"), (64, "ssl_invalid_hostname"), (19, "ssl_unknown_authority"),
     (20, "ssl_unknown_authority"), (10, "ssl_invalid_certificate")],
)  # fmt: skip
def test_certificate_errors(code: int, expected: str) -> None:
    assert failures.classify(_verify_error(code)) == expected

"""The TCP connect probe against loopback listeners."""

from __future__ import annotations

import asyncio

import pytest

from gatewatch.core import failures
from gatewatch.probes import tcp
from gatewatch.probes.config import TCPConfig
from gatewatch.probes.trace import Trace

from .conftest import LOOPBACK, LoopbackHTTPServer


async def test_connects_and_hands_over_the_socket(http_server: LoopbackHTTPServer) -> None:
    record, sock = await tcp.connect(LOOPBACK, http_server.port, TCPConfig(timeout=1.0), Trace())
    assert sock is not None
    try:
        assert (record.ip, record.port, record.success, record.failure) == (
            LOOPBACK,
            http_server.port,
            True,
            None,
        )
        assert 0 <= record.t0 <= record.t
        assert sock.getpeername() == (LOOPBACK, http_server.port)
        assert sock.getblocking() is False
    finally:
        sock.close()


async def test_closed_port_is_refused(closed_port: int) -> None:
    record, sock = await tcp.connect(LOOPBACK, closed_port, TCPConfig(timeout=1.0), Trace())
    assert sock is None
    assert (record.success, record.failure) == (False, failures.CONNECTION_REFUSED)


async def test_dropped_syn_is_a_timeout(blackhole_port: int) -> None:
    record, sock = await tcp.connect(LOOPBACK, blackhole_port, TCPConfig(timeout=0.3), Trace())
    assert sock is None
    assert (record.success, record.failure) == (False, failures.GENERIC_TIMEOUT_ERROR)
    assert 0.3 <= record.t - record.t0 < 3.0


async def test_binds_the_source_address(http_server: LoopbackHTTPServer) -> None:
    config = TCPConfig(timeout=1.0, source_address="127.0.0.2")
    record, sock = await tcp.connect(LOOPBACK, http_server.port, config, Trace())
    assert sock is not None
    try:
        assert record.success and sock.getsockname()[0] == "127.0.0.2"
    finally:
        sock.close()


async def test_source_address_of_another_family_is_ignored(http_server: LoopbackHTTPServer) -> None:
    config = TCPConfig(timeout=1.0, source_address="::1")
    record, sock = await tcp.connect(LOOPBACK, http_server.port, config, Trace())
    assert sock is not None
    sock.close()
    assert record.success


async def test_unusable_source_address_is_a_failure_not_an_exception(http_server: LoopbackHTTPServer) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here, so bind() fails before any packet is sent.
    config = TCPConfig(timeout=1.0, source_address="192.0.2.1")
    record, sock = await tcp.connect(LOOPBACK, http_server.port, config, Trace())
    assert sock is None
    assert record.failure == failures.ADDRESS_NOT_AVAILABLE


async def test_concurrent_connects_share_one_trace(http_server: LoopbackHTTPServer, closed_port: int) -> None:
    trace = Trace()
    config = TCPConfig(timeout=1.0)
    results = await asyncio.gather(
        tcp.connect(LOOPBACK, http_server.port, config, trace),
        tcp.connect(LOOPBACK, closed_port, config, trace),
    )
    for _, sock in results:
        if sock is not None:
            sock.close()
    assert [r.failure for r, _ in results] == [None, failures.CONNECTION_REFUSED]


def test_an_address_that_is_not_an_ip_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        asyncio.run(tcp.connect("example.com", 80, TCPConfig(), Trace()))

"""TCP connect probe: one timed connection attempt to one address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from .config import TCPConfig
from .failures import classify
from .observations import TCPConnect
from .trace import Trace

__all__ = ["connect"]


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def _open_socket(ip: str, config: TCPConfig) -> socket.socket:
    family = _family(ip)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Bind only when the source address is of the same family: a lab's IPv4 vantage says nothing
        # about which IPv6 address to use.
        if config.source_address is not None and _family(config.source_address) == family:
            sock.bind((config.source_address, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(
    ip: str, port: int, config: TCPConfig, trace: Trace
) -> tuple[TCPConnect, socket.socket | None]:
    """Connect to ``ip:port``. On success the caller owns (and must close) the returned socket.

    Network failures are recorded in ``TCPConnect.failure``; an ``ip`` that is not an IP address is a
    caller bug and raises ``ValueError``.
    """
    t0 = trace.now()
    sock: socket.socket | None = None
    try:
        sock = _open_socket(ip, config)
        async with asyncio.timeout(config.timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except (OSError, TimeoutError) as exc:
        if sock is not None:
            sock.close()
        return TCPConnect(ip=ip, port=port, t0=t0, t=trace.now(), success=False, failure=classify(exc)), None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    return TCPConnect(ip=ip, port=port, t0=t0, t=trace.now(), success=True), sock

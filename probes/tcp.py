"""TCP connect probe: one timed connection attempt to one address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from gatewatch.core.failures import classify
from gatewatch.core.observations import TCPConnect

from .config import TCPConfig
from .connection import open_socket
from .trace import Trace

__all__ = ["connect"]


async def connect(
    ip: str, port: int, config: TCPConfig, trace: Trace
) -> tuple[TCPConnect, socket.socket | None]:
    """Connect to ``ip:port``. On success the caller owns (and must close) the returned socket.

    Network failures are recorded in ``TCPConnect.failure``; an ``ip`` that is not an IP address is a
    caller bug and raises ``ValueError``.
    """
    ipaddress.ip_address(ip)  # ValueError: a host name or garbage here is the caller's bug
    t0 = trace.now()
    sock: socket.socket | None = None
    try:
        sock = open_socket(socket.SOCK_STREAM, ip, config.source_address)
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

"""Bind one unprivileged port on many loopback addresses at once, retrying when the port is taken.

The lab's URLs carry a single port per scheme that must be valid on every server address, so the port is
chosen by the kernel on the first address and then claimed on the others; if another process holds it on
one of them, everything is released and a fresh port is tried (a bounded number of times).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

__all__ = ["bind_same_port", "bind_udp_tcp_pair"]

MAX_ATTEMPTS = 20
LISTEN_BACKLOG = 128


def _tcp_listener(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_same_port(addresses: Sequence[str]) -> tuple[int, dict[str, socket.socket]]:
    """Bound (not yet listening) TCP sockets, one per address, all on the same port."""
    if not addresses:
        raise ValueError("no addresses to bind")
    last_error: OSError | None = None
    for _ in range(MAX_ATTEMPTS):
        bound: dict[str, socket.socket] = {}
        try:
            first = _tcp_listener(addresses[0], 0)
            bound[addresses[0]] = first
            port = first.getsockname()[1]
            for address in addresses[1:]:
                bound[address] = _tcp_listener(address, port)
            return port, bound
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last_error = exc
    raise OSError(errno.EADDRINUSE, f"no common free port after {MAX_ATTEMPTS} attempts: {last_error}")


def bind_udp_tcp_pair(address: str) -> tuple[int, socket.socket, socket.socket]:
    """A UDP socket and a TCP socket bound to the same ``address`` and port (a DNS server's pair)."""
    last_error: OSError | None = None
    for _ in range(MAX_ATTEMPTS):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((address, 0))
            udp.setblocking(False)
            port = udp.getsockname()[1]
            tcp = _tcp_listener(address, port)
            return port, udp, tcp
        except OSError as exc:
            udp.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last_error = exc
    raise OSError(errno.EADDRINUSE, f"no free UDP+TCP port after {MAX_ATTEMPTS} attempts: {last_error}")

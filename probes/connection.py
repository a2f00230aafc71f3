"""The byte stream a probe speaks HTTP over: a plain TCP socket, or TLS driven through memory BIOs.

Probes own their sockets instead of using asyncio streams so that they see exactly which bytes went out
and when (a censor's reset right after the ClientHello is a different finding from one after the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Literal

__all__ = [
    "Connection",
    "DatagramInbox",
    "PlainConnection",
    "TLSConnection",
    "format_address",
    "may_be_ip_literal",
    "open_socket",
]

_READ_SIZE = 65536
_MAX_ROUNDS = 4096  # socket reads per recv(): only a peer trickling TLS records byte by byte gets near it


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def open_socket(kind: socket.SocketKind, destination_ip: str, source_address: str | None) -> socket.socket:
    """A non-blocking socket for reaching ``destination_ip``, bound to ``source_address`` when it is of the
    same family (a lab's IPv4 vantage says nothing about which IPv6 address to use)."""
    family = _family(destination_ip)
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if source_address is not None and _family(source_address) == family:
            sock.bind((source_address, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def may_be_ip_literal(text: str) -> bool:
    """False when ``ipaddress.ip_address(text)`` would certainly raise: an IPv6 address has a colon, an IPv4
    one only ASCII digits and dots. Host names are most of what the probes see, and a parse that raises
    costs several times this test."""
    return ":" in text or (text.isascii() and text.replace(".", "").isdigit())


def format_address(ip: str, port: int) -> str:
    """``ip:port``, with brackets around an IPv6 address (``[2001:db8::1]:443``)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Connection:
    """A connected byte stream. ``recv`` returns ``b""`` at end of stream; errors are raised as-is
    (``OSError``/``ssl.SSLError``) for the caller to classify with :func:`failures.classify`."""

    transport: Literal["tcp", "tls"] = "tcp"

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # "ip:port" of the peer

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class PlainConnection(Connection):
    transport: Literal["tcp", "tls"] = "tcp"

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, _READ_SIZE)


class TLSConnection(Connection):
    """TLS over a socket the probe owns, after :func:`tls.handshake` has completed the handshake."""

    transport: Literal["tcp", "tls"] = "tls"

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        *,
        validated: bool,
    ) -> None:
        super().__init__(sock, address)
        self.tls = tls
        self.incoming = incoming
        self.outgoing = outgoing
        # True only when the peer's chain validated for the server name: web.py sends HTTP over
        # nothing else, so that a censor's certificate never receives a volunteer's request.
        self.validated = validated

    async def flush(self) -> None:
        """Send whatever TLS records the SSL object has queued."""
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def feed(self) -> bool:
        """Read once from the socket into the TLS engine; False at end of stream."""
        data = await asyncio.get_running_loop().sock_recv(self.sock, _READ_SIZE)
        if data:
            self.incoming.write(data)
            return True
        self.incoming.write_eof()
        return False

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self.flush()

    async def recv(self) -> bytes:
        # Each round feeds at least one byte (or the EOF, which ends it); callers bound the time.
        for _ in range(_MAX_ROUNDS):
            try:
                return self.tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or a bare TCP close: many servers end a response that way, so it is
                # end-of-stream here and the HTTP layer decides whether the message was complete.
                return b""
            await self.flush()  # post-handshake messages (e.g. key updates) may need an answer
            await self.feed()
        raise ssl.SSLError("no application data within the read round limit")

    def close(self) -> None:
        # A best-effort close_notify; the socket is closed whatever happens.
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.tls.unwrap()
        with contextlib.suppress(OSError, ValueError):
            pending = self.outgoing.read()
            if pending:
                self.sock.send(pending)
        self.sock.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DatagramInbox:
    """The datagrams of a connected UDP socket as they arrive, at most ``limit`` of them, with the error
    reading one in its place (an ICMP unreachable, say). The socket stays registered with the event loop
    from first to last datagram, instead of once per read (each registration costs the loop a selector
    change both ways, and a DNS query that lingers for late replies reads at least twice). ``close()``
    before the socket is closed."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._items: deque[bytes | OSError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._left = limit
        self._loop.add_reader(sock.fileno(), self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            item: bytes | OSError = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            item = exc
        self._items.append(item)
        self._left -= 1
        if self._left <= 0:
            self.close()  # the limit: nothing more is read (a flood stays in the kernel's buffer)
        if self._waiter is not None:
            _wake(self._waiter)

    async def next(self, deadline: float) -> bytes | OSError | None:
        """The next datagram (or the error reading it), or None when the loop's clock reaches ``deadline``
        first."""
        if not self._items:
            waiter = self._loop.create_future()
            self._waiter = waiter
            timer = self._loop.call_at(deadline, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())

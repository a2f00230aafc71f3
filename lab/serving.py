"""A bounded accept loop that owns its connection tasks, so a lab closes without leaking sockets or tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

__all__ = ["AcceptLoop", "Handler", "open_accepted_streams"]

log = logging.getLogger(__name__)

Handler = Callable[[socket.socket, str], Awaitable[None]]
MAX_CONNECTIONS = 256  # per listener: beyond this a new connection is closed at once
SSL_SHUTDOWN_TIMEOUT = 2.0


class AcceptLoop:
    """Accepts on ``listener`` and runs ``handler(conn, client_address)`` per connection.

    The handler owns ``conn`` and must close it (or hand it to a transport it closes); ``close()``
    cancels handlers still running and waits for them. With ``latency`` (seconds) each handler starts
    that long after the accept: the kernel completes TCP handshakes at once, so this is where a
    connection's round trip is paid (the client sees it before its first byte from the server).
    """

    def __init__(
        self, listener: socket.socket, handler: Handler, backlog: int = 128, *, latency: float = 0.0
    ) -> None:
        self._listener = listener
        self._handler = handler
        self._backlog = backlog
        self._latency = latency
        self._accept_task: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._listener.listen(self._backlog)
        self._accept_task = asyncio.get_running_loop().create_task(self._accept())

    async def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        self._listener.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:  # runs for the lab's lifetime; close() cancels it
            try:
                conn, peer = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. EMFILE: keep serving the connections already open
                log.warning("lab accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            if len(self._connections) >= MAX_CONNECTIONS:
                conn.close()
                continue
            task = loop.create_task(self._run(conn, peer[0]))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _run(self, conn: socket.socket, client_address: str) -> None:
        try:
            if self._latency > 0:
                await asyncio.sleep(self._latency)
            await self._handler(conn, client_address)
        except (OSError, TimeoutError, EOFError):
            pass  # a client going away is normal traffic, not a lab error
        except Exception:
            log.exception("lab connection handler failed")
        finally:
            conn.close()  # no-op when a transport already closed it


async def open_accepted_streams(
    conn: socket.socket, ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 5.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Asyncio streams over an accepted socket, with a server-side TLS handshake when a context is given."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    if ssl_context is None:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
    else:
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            conn,
            ssl=ssl_context,
            ssl_handshake_timeout=handshake_timeout,
            ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT,
        )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

"""A small HTTP/1.1 server on asyncio streams and h11, for the local page only.

Why not aiohttp or ``http.server``: the agent's light install does not carry aiohttp (the collector's
server), and ``http.server`` runs handlers on threads, while everything the page drives (a pass, the
queue, the uploader) lives on one asyncio event loop and is not meant to be shared between threads. h11
is already the agent's HTTP parser (its client, :mod:`..http_client`), so this adds no dependency.

Bounded everywhere: the request head (:data:`MAX_HEAD_BYTES`, :data:`MAX_HEADERS`), the body
(:data:`MAX_BODY_BYTES`), the time a client may take to send a request (:data:`READ_TIMEOUT`), how many
requests a connection serves and how many connections are open at once. A request over a bound is
answered with a 4xx and the connection closed; nothing a browser sends can make the handler raise out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "Handler",
    "LocalServer",
    "Request",
    "Response",
]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_BODY_BYTES = 256 * 1024  # the largest form (settings) is a few kilobytes
READ_TIMEOUT = 15.0  # seconds for one read of a request (also the idle time of a kept-alive connection)
MAX_REQUESTS_PER_CONNECTION = 200
MAX_CONNECTIONS = 32
_READ_SIZE = 16 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined as HTTP allows (cookies by "; ")
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        """Each parameter's first value."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query, max_num_fields=50).items()}

    def form(self) -> dict[str, list[str]]:
        """An ``application/x-www-form-urlencoded`` body (anything else reads as an empty form)."""
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return parse_qs(text, keep_blank_values=True, max_num_fields=500)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


def _plain(status: int, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


class LocalServer:
    """Serves ``handler`` on one address; ``extra_headers`` go on every answer, refusals included."""

    def __init__(self, handler: Handler, extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.handler = handler
        self.extra_headers = extra_headers
        self.server: asyncio.Server | None = None
        self.port = 0
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._connection, host, port, limit=_READ_SIZE)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._slots.locked():  # too many open: this one is closed at once
            writer.close()
            return
        if task is not None:
            self._connections.add(task)
        try:
            async with self._slots:
                await self._serve(reader, writer)
        except (TimeoutError, OSError, h11.ProtocolError):
            pass  # the browser went away or spoke nonsense: nothing to answer
        except asyncio.CancelledError:
            pass  # the server is closing (close() cancels its connections): end quietly
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                await self._send(conn, writer, _plain(status, "bad request"), close=True)
                return
            except _TooLarge:
                await self._send(conn, writer, _plain(413, "request too large"), close=True)
                return
            if request is None:
                return
            try:
                response = await self.handler(request)
            except Exception:  # a bug must not take the page down: the volunteer sees a 500 and can go on
                log.exception("the page failed to answer %s %s", request.method, request.path)
                response = _plain(500, "internal error (see the agent's log)")
            # The last request a connection serves says so, so the browser opens a new one for the next.
            await self._send(conn, writer, response, close=served == MAX_REQUESTS_PER_CONNECTION)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(_READ_SIZE), READ_TIMEOUT)
                conn.receive_data(data)  # b"" marks the end; h11 then reports ConnectionClosed or an error
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head_size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if len(event.headers) > MAX_HEADERS or head_size > MAX_HEAD_BYTES:
                    # h11 bounds a head still arriving; one that arrived whole in a read is bounded here
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(
                    method=head.method.decode("ascii", "replace"),
                    target=head.target.decode("ascii", "replace"),
                    headers=_headers(head.headers),
                    body=bytes(body),
                )

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *, close: bool
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # h11 lets a server answer a request it could not read (IDLE) or has read
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *self.extra_headers,
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode()
        writer.write(
            conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
        )
        writer.write(conn.send(h11.Data(data=response.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("ascii", "replace").lower(), value.decode("latin-1")
        if key in headers:
            headers[key] += ("; " if key == "cookie" else ", ") + text
        else:
            headers[key] = text
    return headers

"""The agent's own small HTTP/1.1 client for its collector calls, on asyncio streams and h11.

The agent needs little from HTTP: a JSON or text body out, a JSON or text body back, over http or https,
from a bound source address (labs), with timeouts and a bounded number of requests in flight. A general
client library cost ~11 MiB of imports on a volunteer's machine (issue 4: the agent's memory goal), so
this holds what the agent needs and nothing more: no cookies (nothing may link one call to the next), no
redirects (the collector's API never sends one), no compression. Responses are read whole, up to a cap:
every answer the agent expects is small.

A request may take a :class:`~gatewatch.agent.proxy.Route` (a SOCKS5 or HTTP CONNECT proxy, a CDN front);
the client's own ``route`` is the default, so every collector call made with it goes the configured way
without the caller knowing. A ``stream_group`` keeps connections (and, for Tor, circuits) apart: a
connection is reused only for the same origin, route and group (and only the client's own group's are
kept alive).

Every failure is raised as an :class:`HttpClientError` carrying a failure string (from
:mod:`gatewatch.core.failures` where one fits), so that a caller turns any of them into data with one
``except`` clause. The subclasses say whose fault it was: ours (:class:`InvalidRequest`), the network's
(:class:`ConnectFailed`, :class:`RequestTimedOut`) or the server's (:class:`BadResponse`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11

from gatewatch.core.failures import EOF_ERROR, GENERIC_TIMEOUT_ERROR, HTTP_INVALID_RESPONSE, classify

from .proxy import ProxyError, Route, new_stream_group, open_stream

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "DIRECT",
    "HttpClient",
    "HttpClientError",
    "InvalidRequest",
    "ONION_NEEDS_TOR",
    "RequestTimedOut",
    "Response",
    "ResponseTooLarge",
    "Timeouts",
]

ONION_NEEDS_TOR = "onion_needs_tor"  # a .onion URL without a socks5h:// proxy: refused, never resolved
DIRECT = Route()

USER_AGENT = "gatewatch-agent"
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # the largest answer expected is a country's test list (~100 kB)
_READ_SIZE = 65536
# Reads per response: each read returns at least one byte or ends the exchange, and the whole request
# is under Timeouts.total; this only bounds a server trickling single bytes.
_MAX_READS = 100_000
# A kept-alive connection idle for longer is closed rather than reused: servers drop idle connections
# after a while (nginx and aiohttp after 75 s, some proxies after 5 s), and a request sent on one they
# are closing is lost.
_MAX_IDLE_SECONDS = 4.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A request's body in pieces, sent one after the other. Iterated more than once (for its length, then for
# each attempt), so a list or an object whose __iter__ makes the pieces anew: never a one-shot iterator.
_Body = Iterable[bytes] | None


class HttpClientError(Exception):
    """A request that got no usable response. ``failure`` is a short string fit for the agent's status."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(f"{failure} ({detail})" if detail else failure)
        self.failure = failure


class InvalidRequest(HttpClientError):
    """Our fault: a URL or body this client cannot send."""


class ConnectFailed(HttpClientError):
    """No connection: refused, unreachable, name not found, or the TLS handshake failed."""


class RequestTimedOut(HttpClientError):
    """The connection, the answer or the whole request took longer than its :class:`Timeouts` allow."""


class BadResponse(HttpClientError):
    """The server's fault: it closed or reset the connection mid-answer, or did not speak HTTP/1.1."""


class ResponseTooLarge(BadResponse):
    """The answer's body is larger than the client's cap; it was not read further."""


class _ClosedBeforeAnswer(BadResponse):
    """The server closed or reset the connection before a single byte of answer."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0  # TCP and TLS handshake
    read: float = 30.0  # the longest wait for the next bytes of an answer (a control is measured first)
    total: float = 60.0  # the whole request, connecting included


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in the order received
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), e.g. ``Retry-After``; None when absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def text(self) -> str:
        """The body decoded with the charset of its Content-Type (UTF-8 when none or unknown)."""
        charset = "utf-8"
        for param in (self.header("content-type") or "").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, whatever the Content-Type says. Raises ValueError when it is not JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _split_url(url: str, params: Mapping[str, str] | None) -> tuple[_Origin, str]:
    """(origin, request-target) of an absolute http(s) URL, with ``params`` added to its query."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest("invalid_url", str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidRequest("invalid_url", "not an absolute http(s) URL")
    query = "&".join(part for part in (parts.query, urlencode(params or {})) if part)
    target = (parts.path or "/") + (f"?{query}" if query else "")
    return _Origin(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]), target


@dataclass(frozen=True)
class _Way:
    """What a kept-alive connection may be reused for: the same origin, by the same route, in the same
    stream group."""

    origin: _Origin
    route: Route
    group: str


class _Connection:
    def __init__(self, way: _Way, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.way = way
        self.reader = reader
        self.writer = writer
        self.protocol = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def reusable(self) -> bool:
        fresh = time.monotonic() - self.idle_since < _MAX_IDLE_SECONDS
        return fresh and not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class HttpClient:
    """HTTP/1.1 requests with at most ``max_concurrent`` in flight (each on its own connection).

    ``ssl_context`` is used for https as given; without one, a context with the system's roots plus
    ``ca_file`` (a lab's CA, trusted in addition) is made at the first https request. ``source_address``
    binds every connection (labs put the agent inside an emulated network). With ``keep_alive``, a
    connection is kept for the next request to the same origin for a few seconds. ``route`` is how
    requests go when they name none (direct by default).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        source_address: str | None = None,
        max_concurrent: int = 8,
        timeouts: Timeouts | None = None,
        keep_alive: bool = True,
        max_body: int = DEFAULT_MAX_BODY,
        user_agent: str = USER_AGENT,
        route: Route = DIRECT,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._ssl_context = ssl_context
        self._ca_file = ca_file
        self.source_address = source_address
        self.timeouts = timeouts or Timeouts()
        self.keep_alive = keep_alive
        self.max_body = max_body
        self.user_agent = user_agent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_idle = max_concurrent
        self._idle: list[_Connection] = []
        self._closed = False
        self.route = route
        self._group = new_stream_group()  # this client's own stream group, for calls that name none

    def new_stream_group(self) -> str:
        """A fresh stream group: requests made with it never share a connection (or a Tor circuit) with
        the client's other requests."""
        return new_stream_group()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the kept-alive connections; requests after this are a bug (RuntimeError)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            try:
                await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
            except (OSError, TimeoutError):
                pass  # closing anyway: the peer's goodbye is not worth waiting for

    async def get(self, url: str, *, params: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", url, params=params)

    async def post_json(self, url: str, data: Any) -> Response:
        return await self.request("POST", url, json_body=data)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        body: bytes | str | Iterable[bytes] | None = None,
        content_type: str = "text/plain; charset=utf-8",
        route: Route | None = None,
        stream_group: str | None = None,
    ) -> Response:
        """Send one request and read its whole answer. ``json_body`` (serialised) or ``body`` is sent
        as the request's body; a body given as pieces (a re-iterable, see ``_Body``) is sent piece by piece,
        never joined: an upload batch can be megabytes. Raises :class:`HttpClientError` (a subclass) for
        any failure. ``route`` (default: the client's) says how to reach the server; requests of one
        ``stream_group`` (default: the client's own) share connections, others never do."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        origin, target = _split_url(url, params)
        way = _Way(origin, route or self.route, stream_group or self._group)
        if not way.route.reaches(origin.host):
            raise InvalidRequest(ONION_NEEDS_TOR, "a .onion address is reached only through Tor (socks5h://)")
        payload: _Body = None
        if json_body is not None:
            payload, content_type = [json.dumps(json_body).encode()], "application/json"
        elif isinstance(body, str):
            payload = [body.encode()]
        elif isinstance(body, bytes):
            payload = [body]
        elif isinstance(body, Iterator):
            raise TypeError("a body in pieces must be iterable more than once, not an iterator")
        elif body is not None:
            payload = body
        headers = [
            ("Host", origin.host_header),
            ("User-Agent", self.user_agent),
            ("Accept", "application/json, text/*;q=0.9"),
        ]
        if payload is not None or method in ("POST", "PUT"):
            length = sum(len(piece) for piece in payload or ())
            headers += [("Content-Type", content_type), ("Content-Length", str(length))]
        if not self.keep_alive:
            headers.append(("Connection", "close"))
        request = h11.Request(method=method, target=target, headers=headers)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeouts.total):
                    return await self._send(way, request, payload)
            except TimeoutError:
                raise RequestTimedOut(GENERIC_TIMEOUT_ERROR, f"{method} took too long") from None

    async def _send(self, way: _Way, request: h11.Request, payload: _Body) -> Response:
        conn = self._idle_connection(way)
        if conn is not None:
            try:
                return await self._exchange(conn, request, payload)
            except _ClosedBeforeAnswer:
                # The server closed the kept-alive connection as we reused it. Sending again is safe:
                # every collector call is idempotent (a second upload of a batch is answered "duplicate").
                pass
        conn = await self._connect(way)
        return await self._exchange(conn, request, payload)

    def _idle_connection(self, way: _Way) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.way == way and conn.reusable():
                return conn
            conn.writer.close()
        return None

    def _release(self, conn: _Connection) -> None:
        protocol = conn.protocol
        done = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
        # A connection of a stream group of its own (an upload through Tor) is not kept: its group is not
        # used again, and an idle Tor stream per upload would only pile up.
        own_group = conn.way.group == self._group
        if self.keep_alive and done and own_group and not self._closed and len(self._idle) < self._max_idle:
            protocol.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.writer.close()

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            if self._ca_file:
                context.load_verify_locations(cafile=self._ca_file)
            self._ssl_context = context
        return self._ssl_context

    async def _connect(self, way: _Way) -> _Connection:
        origin, route = way.origin, way.route
        tls = origin.scheme == "https"
        context = self._context() if tls else None  # outside the try: a bad CA file is a config error
        # A fronted address: the TCP connection and the TLS name are the front's (a CDN), the Host header
        # stays the collector's (set by the caller), so the gateway sees only the front.
        host = route.front or origin.host
        try:
            async with asyncio.timeout(self.timeouts.connect):
                reader, writer = await open_stream(
                    route,
                    host,
                    origin.port,
                    group=way.group,
                    ssl_context=context,
                    source_address=self.source_address,
                    limit=_READ_SIZE,
                )
        except TimeoutError:
            raise RequestTimedOut(GENERIC_TIMEOUT_ERROR, f"connecting to {host}") from None
        except ProxyError as exc:
            raise ConnectFailed(exc.failure, str(exc)) from None
        except OSError as exc:  # ssl.SSLError and socket.gaierror included
            raise ConnectFailed(classify(exc), str(exc)) from None
        return _Connection(way, reader, writer)

    async def _exchange(self, conn: _Connection, request: h11.Request, payload: _Body) -> Response:
        try:
            response = await self._exchange_raw(conn, request, payload)
        except BaseException:
            conn.abort()  # half a request or half an answer: the connection is of no further use
            raise
        self._release(conn)
        return response

    async def _exchange_raw(self, conn: _Connection, request: h11.Request, payload: _Body) -> Response:
        protocol = conn.protocol
        received = 0
        try:
            conn.writer.write(protocol.send(request) or b"")
            for piece in payload or ():
                # Passed through h11 uncopied, and drained piece by piece so that the transport does not
                # hold a copy of the whole body either (the memory goal again).
                for data in protocol.send_with_data_passthrough(h11.Data(data=piece)) or ():
                    conn.writer.write(data)
                async with asyncio.timeout(self.timeouts.read):
                    await conn.writer.drain()
            conn.writer.write(protocol.send(h11.EndOfMessage()) or b"")
            async with asyncio.timeout(self.timeouts.read):
                await conn.writer.drain()
            head: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            for _ in range(_MAX_READS):
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(self.timeouts.read):
                        data = await conn.reader.read(_READ_SIZE)
                    if not data and not received:
                        raise _ClosedBeforeAnswer(EOF_ERROR, "closed before answering")
                    received += len(data)
                    protocol.receive_data(data)
                elif isinstance(event, h11.Response):
                    head = event
                    self._check_declared_length(head)
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self.max_body:
                        raise ResponseTooLarge("response_too_large", f"more than {self.max_body} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    return Response(head.status_code, _decode_headers(head), b"".join(chunks))
                elif isinstance(event, h11.ConnectionClosed):
                    raise BadResponse(EOF_ERROR, "closed mid-answer")
                # InformationalResponse (1xx) needs nothing: the final response follows.
            raise BadResponse(HTTP_INVALID_RESPONSE, "the answer did not end within the read limit")
        except h11.RemoteProtocolError as exc:
            # h11 reports a connection closed mid-answer as a protocol error: it is an EOF to us.
            failure = EOF_ERROR if conn.reader.at_eof() else HTTP_INVALID_RESPONSE
            raise BadResponse(failure, str(exc)) from None
        except h11.LocalProtocolError as exc:
            raise InvalidRequest("invalid_request", str(exc)) from None
        except TimeoutError:  # before OSError, of which it is a subclass
            raise RequestTimedOut(GENERIC_TIMEOUT_ERROR, "waiting for the answer") from None
        except OSError as exc:  # resets and TLS errors mid-exchange
            error = _ClosedBeforeAnswer if not received else BadResponse
            raise error(classify(exc), str(exc)) from None

    def _check_declared_length(self, head: h11.Response) -> None:
        for name, value in head.headers:
            if name == b"content-length" and int(value) > self.max_body:  # h11 checked it is a number
                raise ResponseTooLarge("response_too_large", f"{int(value)} bytes announced")


def _decode_headers(head: h11.Response) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers)

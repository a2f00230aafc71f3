"""HTTP probe: one GET with h11 over a connection the probe owns, recorded as a browser would see it."""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import ssl
from urllib.parse import quote, urlsplit

import h11

from gatewatch.core import failures
from gatewatch.core.observations import HTTPRequest, HTTPResponse, HTTPTransaction

from .config import HTTPConfig
from .connection import Connection
from .trace import Trace

__all__ = ["extract_title", "fetch", "request_target"]

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_SPACE_RE = re.compile(r"\s+")
# RFC 3986 pchar and query characters left as they are ("%" too: existing escapes stay escapes).
_PATH_SAFE = "/%:@!$&'()*+,;="
_QUERY_SAFE = _PATH_SAFE + "?"
# Reads per response: each read returns at least one byte or ends the exchange, and the whole
# transaction is under config.timeout; this only bounds a peer trickling single bytes.
_MAX_READS = 100_000


def request_target(url: str) -> str:
    """The request-target of an absolute URL: path (``/`` when empty) and query, no fragment.

    Characters a URL may not carry raw (spaces, non-ASCII) are percent-encoded as a browser does, so
    that a server's sloppy Location header is followed instead of breaking the request.
    """
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    return f"{path}?{quote(parts.query, safe=_QUERY_SAFE)}" if parts.query else path


def extract_title(body: bytes) -> str | None:
    """``<title>`` text: case-insensitive tag, whitespace collapsed, HTML entities unescaped."""
    match = _TITLE_RE.search(body)
    if match is None:
        return None
    text = html.unescape(match.group(1).decode("utf-8", errors="replace"))
    return _SPACE_RE.sub(" ", text).strip()


def _headers(host_header: str, config: HTTPConfig) -> list[tuple[str, str]]:
    return [
        ("Host", host_header),
        ("User-Agent", config.user_agent),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.5"),
        # Only identity is asked for, so the recorded body and its hash are the bytes as served.
        ("Accept-Encoding", "identity"),
    ]


class _Exchange:
    """What has been received so far, so that a failure mid-body still records the response."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.bytes_in = 0
        self.eof = False
        self.response: h11.Response | None = None
        self.body = bytearray()
        self.truncated = False

    def add_body(self, data: bytes) -> None:
        room = self.cap - len(self.body)
        if len(data) > room:
            self.truncated = True
        self.body += data[: max(room, 0)]

    def record(self) -> HTTPResponse | None:
        if self.response is None:
            return None
        body = bytes(self.body)
        return HTTPResponse(
            code=self.response.status_code,
            headers=[
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self.response.headers.raw_items()
            ],
            body=body.decode("utf-8", errors="replace"),
            body_is_truncated=self.truncated,
            body_length=len(body),
            body_sha256=hashlib.sha256(body).hexdigest(),
            title=extract_title(body),
        )


async def _exchange(conn: Connection, request: h11.Request, state: _Exchange) -> None:
    client = h11.Connection(h11.CLIENT)
    await conn.send(client.send(request) + client.send(h11.EndOfMessage()))
    for _ in range(_MAX_READS):
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = await conn.recv()
            state.bytes_in += len(data)
            state.eof = not data
            client.receive_data(data)
        elif isinstance(event, h11.Response):
            state.response = event
        elif isinstance(event, h11.Data):
            state.add_body(bytes(event.data))
            if state.truncated:
                return  # the cap is reached: the rest is not wanted
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return
        # InformationalResponse (1xx) needs nothing: the final response follows.
    raise h11.RemoteProtocolError("response did not end within the read limit")


def _protocol_failure(state: _Exchange) -> str:
    # An EOF before any byte, or in the middle of a body, is the connection ending early; bytes that
    # never formed a response (however they ended) are an invalid response.
    if state.eof and (state.bytes_in == 0 or state.response is not None):
        return failures.EOF_ERROR
    return failures.HTTP_INVALID_RESPONSE


async def fetch(
    conn: Connection, url: str, host_header: str, config: HTTPConfig, trace: Trace
) -> HTTPTransaction:
    """GET ``url`` over ``conn`` (which the caller keeps and closes). Never raises for network failures."""
    headers = _headers(host_header, config)
    request = h11.Request(method="GET", target=request_target(url), headers=headers)
    state = _Exchange(config.body_cap)
    failure: str | None = None
    t0 = trace.now()
    try:
        async with asyncio.timeout(config.timeout):
            await _exchange(conn, request, state)
    except h11.RemoteProtocolError:
        failure = _protocol_failure(state)
    except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
        failure = failures.classify(exc)
    return HTTPTransaction(
        t0=t0,
        t=trace.now(),
        address=conn.address,
        transport=conn.transport,
        request=HTTPRequest(method="GET", url=url, headers=headers),
        response=state.record(),
        failure=failure,
    )

"""The HTTP probe: one GET over a connection the test opens, against a loopback server."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatewatch.core import failures
from gatewatch.core.observations import HTTPTransaction
from gatewatch.probes import http, tcp, tls
from gatewatch.probes.config import HTTPConfig, TCPConfig, TLSConfig
from gatewatch.probes.connection import Connection, PlainConnection
from gatewatch.probes.trace import Trace

from .conftest import LOOPBACK, PKI, LoopbackHTTPServer

Fetch = Callable[..., Awaitable[HTTPTransaction]]


@pytest.fixture
async def fetch(http_server: LoopbackHTTPServer) -> AsyncIterator[Fetch]:
    """GET a path from the plain loopback server over a fresh connection."""
    opened: list[Connection] = []

    async def run(path: str, **settings: object) -> HTTPTransaction:
        trace = Trace()
        record, sock = await tcp.connect(LOOPBACK, http_server.port, TCPConfig(timeout=1.0), trace)
        assert sock is not None, record
        conn = PlainConnection(sock, f"{LOOPBACK}:{http_server.port}")
        opened.append(conn)
        url = f"http://site.test:{http_server.port}{path}"
        config = HTTPConfig(**{"timeout": 2.0, **settings})  # type: ignore[arg-type]
        return await http.fetch(conn, url, f"site.test:{http_server.port}", config, trace)

    yield run
    for conn in opened:
        conn.close()


async def test_page_with_title(fetch: Fetch, http_server: LoopbackHTTPServer) -> None:
    tx = await fetch("/?q=1#fragment")
    assert tx.failure is None and tx.transport == "tcp"
    assert tx.address == f"{LOOPBACK}:{http_server.port}"
    assert tx.request.method == "GET" and tx.request.url.endswith("/?q=1#fragment")
    response = tx.response
    assert response is not None and response.code == 200
    assert response.title == "Café & Friends"
    assert response.body is not None and response.body.startswith("<html>")
    raw = response.body.encode()
    assert (response.body_length, response.body_is_truncated) == (len(raw), False)
    assert response.body_sha256 == hashlib.sha256(raw).hexdigest()
    # Headers as received: original case and order.
    assert response.headers[:2] == [("Content-Length", str(len(raw))), ("Connection", "close")]
    assert ("X-Served-By", "Lab") in response.headers
    assert 0 <= tx.t0 <= tx.t


async def test_request_head_is_what_a_browser_sends(fetch: Fetch, http_server: LoopbackHTTPServer) -> None:
    tx = await fetch("/?q=1#fragment", user_agent="gatewatch-test/1")
    [(target, headers)] = http_server.requests
    assert target == "/?q=1"  # the fragment stays in the browser
    sent = dict(headers)
    assert sent["Host"] == f"site.test:{http_server.port}"
    assert sent["User-Agent"] == "gatewatch-test/1"
    assert sent["Accept-Encoding"] == "identity"
    assert "Accept" in sent and "Accept-Language" in sent
    assert tx.request.headers == headers  # the record says exactly what went on the wire


async def test_body_over_the_cap_is_truncated(fetch: Fetch, http_server: LoopbackHTTPServer) -> None:
    tx = await fetch("/big", body_cap=1000)
    response = tx.response
    assert tx.failure is None and response is not None
    assert (response.body_length, response.body_is_truncated) == (1000, True)
    assert response.body == "x" * 1000
    assert response.body_sha256 == hashlib.sha256(b"x" * 1000).hexdigest()


async def test_body_exactly_at_the_cap_is_not_truncated(
    fetch: Fetch, http_server: LoopbackHTTPServer
) -> None:
    tx = await fetch("/big", body_cap=http_server.body_size)
    assert tx.response is not None
    assert (tx.response.body_length, tx.response.body_is_truncated) == (http_server.body_size, False)


async def test_redirect_is_recorded_not_followed(fetch: Fetch) -> None:
    tx = await fetch("/redirect/1")
    assert tx.response is not None and tx.response.code == 302
    assert ("Location", "/redirect/0") in tx.response.headers
    assert tx.response.title is None


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/garbage", failures.HTTP_INVALID_RESPONSE),
        ("/reset", failures.CONNECTION_RESET),
        ("/close", failures.EOF_ERROR),
    ],
)
async def test_failures(fetch: Fetch, path: str, failure: str) -> None:
    tx = await fetch(path)
    assert (tx.failure, tx.response) == (failure, None)


async def test_eof_mid_body_keeps_what_arrived(fetch: Fetch) -> None:
    tx = await fetch("/short")
    assert tx.failure == failures.EOF_ERROR
    assert tx.response is not None and tx.response.code == 200 and tx.response.body == "only this"


async def test_silent_server_is_a_timeout(fetch: Fetch) -> None:
    tx = await fetch("/silent", timeout=0.3)
    assert (tx.failure, tx.response) == (failures.GENERIC_TIMEOUT_ERROR, None)
    assert 0.3 <= tx.t - tx.t0 < 3.0


async def test_over_tls(https_server: LoopbackHTTPServer, pki: PKI) -> None:
    trace = Trace()
    _, sock = await tcp.connect(LOOPBACK, https_server.port, TCPConfig(timeout=1.0), trace)
    assert sock is not None
    address = f"{LOOPBACK}:{https_server.port}"
    record, conn = await tls.handshake(sock, address, "site.test", TLSConfig(ca_file=str(pki.ca_file)), trace)
    assert conn is not None and conn.validated, record
    try:
        url = f"https://site.test:{https_server.port}/"
        tx = await http.fetch(conn, url, f"site.test:{https_server.port}", HTTPConfig(timeout=2.0), trace)
    finally:
        conn.close()
    assert tx.failure is None and tx.transport == "tls" and tx.address == address
    assert tx.response is not None and tx.response.title == "Café & Friends"


@pytest.mark.parametrize(
    ("body", "title"),
    [
        (b"<title>plain</title>", "plain"),
        (b"<TiTlE lang='en'>\n\t A \n B </tItLe>", "A B"),
        (b"<title>&lt;b&gt; &#233;t&eacute;</title>", "<b> été"),
        (b"<title></title>", ""),
        (b"<html>no title</html>", None),
        (b"<title>caf\xe9</title>", "caf\ufffd"),  # Latin-1 bytes: decoded with replacement
    ],
)
def test_extract_title(body: bytes, title: str | None) -> None:
    assert http.extract_title(body) == title


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://a.test", "/"),
        ("http://a.test/p/q?x=1&y=2#f", "/p/q?x=1&y=2"),
        ("https://a.test:8443/?", "/"),
        ("http://a.test/a b/é?q=a b&r=%20", "/a%20b/%C3%A9?q=a%20b&r=%20"),
    ],
)
def test_request_target(url: str, target: str) -> None:
    assert http.request_target(url) == target

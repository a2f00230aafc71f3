"""The agent's HTTP client against servers on 127.0.0.0/8 whose answers are written byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatewatch.agent.http_client import (
    BadResponse,
    ConnectFailed,
    HttpClient,
    InvalidRequest,
    RequestTimedOut,
    ResponseTooLarge,
    Timeouts,
)
from gatewatch.lab.certs import issue_lab_pki

Handler = Callable[["Received", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
QUICK = Timeouts(connect=2.0, read=2.0, total=5.0)


@dataclass
class Received:
    """What a test server saw: one entry per request, and the peer of each connection."""

    url: str = ""
    peers: list[str] = field(default_factory=list)
    heads: list[dict[str, str]] = field(default_factory=list)  # lower-cased names; ":line" the request line
    bodies: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request (head and Content-Length body); False at end of stream."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        line, *lines = raw.decode("latin-1").split("\r\n")
        head = {":line": line}
        for text in filter(None, lines):
            name, _, value = text.partition(":")
            head[name.strip().lower()] = value.strip()
        self.heads.append(head)
        self.bodies.append(await reader.readexactly(int(head.get("content-length", "0"))))
        return True


def response(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, scheme: str = "http"
) -> AsyncIterator[Received]:
    received = Received()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.peers.append(writer.get_extra_info("peername")[0])
        try:
            await handler(received, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what the test checks is on the client's side
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    received.url = f"{scheme}://{host}:{port}"
    try:
        yield received
    finally:
        server.close()
        await server.wait_closed()


def answer_each(answer: bytes) -> Handler:
    async def handler(received: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(100):  # bounded: no test sends this many requests on one connection
            if not await received.read_request(reader):
                return
            writer.write(answer)
            await writer.drain()

    return handler


async def test_get_with_params_reads_a_content_length_body() -> None:
    async with serving(answer_each(response(b'{"ok": true}', "Content-Type: application/json"))) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            answer = await client.get(f"{srv.url}/api/v1/test-list?v=1", params={"cc": "KH", "q": "a b&c"})
    assert answer.status == 200 and answer.json() == {"ok": True}
    assert answer.header("CONTENT-TYPE") == "application/json"
    head = srv.heads[0]
    assert head[":line"] == "GET /api/v1/test-list?v=1&cc=KH&q=a+b%26c HTTP/1.1"
    assert head["host"] == srv.url.removeprefix("http://")
    assert head["user-agent"] == "gatewatch-agent"
    assert "cookie" not in head and "content-length" not in head


async def test_a_chunked_body_is_reassembled() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/csv; charset=latin-1\r\n\r\n"
        b"4\r\nurl,\r\n9\r\ncategory\n\r\n3\r\ncaf\r\n1\r\n\xe9\r\n0\r\n\r\n"
    )
    async with serving(answer_each(chunked)) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            answer = await client.get(srv.url)
    assert answer.body == b"url,category\ncaf\xe9" and answer.text() == "url,category\ncafé"


async def test_post_json_sends_the_exact_body_with_its_length() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            await client.post_json(f"{srv.url}/api/v1/control", {"input": "http://x.example/", "n": [1, 2]})
    head, body = srv.heads[0], srv.bodies[0]
    assert head[":line"].startswith("POST /api/v1/control ")
    assert head["content-type"] == "application/json" and int(head["content-length"]) == len(body)
    assert json.loads(body) == {"input": "http://x.example/", "n": [1, 2]}


class _MadeWhenRead:
    """Pieces made anew at each iteration, as the uploader's batch body is."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        yield from (bytes(piece) for piece in self.pieces)


async def test_a_body_in_pieces_arrives_whole_with_one_length() -> None:
    pieces = [b'{"measurements": [', b"1" * 70_000, b", ", b"2" * 70_000, b"]}"]
    body = _MadeWhenRead(pieces)
    async with serving(answer_each(response(b"{}"))) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            await client.request("POST", srv.url, body=pieces, content_type="application/json")
            await client.request("POST", srv.url, body=body, content_type="application/json")
            with pytest.raises(TypeError):  # a one-shot iterator could not be sent twice, nor measured
                await client.request("POST", srv.url, body=iter(pieces))
    assert srv.bodies == [b"".join(pieces)] * 2 and body.iterations == 2  # its length, then the sending
    assert srv.heads[0]["content-length"] == srv.heads[1]["content-length"] == "140022"


async def test_status_and_retry_after_are_readable() -> None:
    busy = response(b'{"error": "busy"}', "Retry-After: 7", status="429 Too Many Requests")
    async with serving(answer_each(busy)) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            answer = await client.post_json(srv.url, {})
    assert answer.status == 429 and answer.header("retry-after") == "7"
    assert answer.json() == {"error": "busy"}


async def test_keep_alive_reuses_one_connection_and_can_be_turned_off() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            for _ in range(3):
                assert (await client.get(srv.url)).status == 200
        assert len(srv.peers) == 1 and len(srv.heads) == 3
        async with HttpClient(timeouts=QUICK, keep_alive=False) as client:
            for _ in range(2):
                assert (await client.get(srv.url)).status == 200
    assert len(srv.peers) == 3 and srv.heads[-1]["connection"] == "close"


async def test_a_kept_alive_connection_closed_by_the_server_is_replaced() -> None:
    async def once_per_connection(received: Received, reader, writer) -> None:
        if await received.read_request(reader):
            writer.write(response(b'{"n": 1}'))
            await writer.drain()
        await received.read_request(reader)  # a second request on this connection: closed unanswered

    async with serving(once_per_connection) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            first = await client.get(srv.url)
            second = await client.post_json(srv.url, {"again": True})
    assert first.json() == second.json() == {"n": 1}
    assert len(srv.peers) == 2 and [h[":line"][:4] for h in srv.heads] == ["GET ", "POST", "POST"]


async def test_requests_in_flight_are_bounded() -> None:
    async def slow(received: Received, reader, writer) -> None:
        while await received.read_request(reader):
            received.in_flight += 1
            received.most_in_flight = max(received.most_in_flight, received.in_flight)
            await asyncio.sleep(0.05)
            received.in_flight -= 1
            writer.write(response(b"{}"))
            await writer.drain()

    async with serving(slow) as srv:
        async with HttpClient(timeouts=QUICK, max_concurrent=2) as client:
            answers = await asyncio.gather(*(client.get(srv.url) for _ in range(6)))
    assert [a.status for a in answers] == [200] * 6
    assert srv.most_in_flight == 2 and len(srv.peers) == 2


async def test_no_answer_is_a_read_timeout() -> None:
    async def silent(received: Received, reader, writer) -> None:
        await received.read_request(reader)
        await asyncio.sleep(5)

    async with serving(silent) as srv:
        async with HttpClient(timeouts=Timeouts(connect=1, read=0.2, total=3)) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimedOut) as caught:
                await client.get(srv.url)
    assert caught.value.failure == "generic_timeout_error" and time.monotonic() - started < 2
    assert len(srv.peers) == 1  # a timeout is not a closed kept-alive connection: no second try


async def test_a_trickling_answer_hits_the_total_timeout() -> None:
    async def trickle(received: Received, reader, writer) -> None:
        await received.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.02)

    async with serving(trickle) as srv:
        async with HttpClient(timeouts=Timeouts(connect=1, read=1, total=0.3)) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimedOut):
                await client.get(srv.url)
    assert time.monotonic() - started < 1.5


async def test_a_full_listen_queue_is_a_connect_timeout() -> None:
    # A socket that listens and never accepts: once its queue is full, the kernel drops further SYNs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(listener.getsockname())
                fillers.append(filler)
            await asyncio.sleep(0.1)
            async with HttpClient(timeouts=Timeouts(connect=0.3, read=1, total=3)) as client:
                with pytest.raises(RequestTimedOut) as caught:
                    await client.get(url)
        finally:
            for filler in fillers:
                filler.close()
    assert caught.value.failure == "generic_timeout_error"


async def test_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    async with HttpClient(timeouts=QUICK) as client:
        with pytest.raises(ConnectFailed) as caught:
            await client.get(url)
    assert caught.value.failure == "connection_refused"


async def test_the_source_address_binds_every_connection() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        async with HttpClient(timeouts=QUICK, source_address="127.0.0.3", keep_alive=False) as client:
            await client.get(srv.url)
            await client.get(srv.url)
    assert srv.peers == ["127.0.0.3", "127.0.0.3"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return issue_lab_pki(["127.0.0.1", "other.example"], Path(tmp_path_factory.mktemp("pki")))


async def test_https_trusts_an_extra_ca_file(pki) -> None:
    tls = pki.server_context("127.0.0.1")
    async with serving(answer_each(response(b'{"tls": 1}')), tls=tls, scheme="https") as srv:
        async with HttpClient(timeouts=QUICK, ca_file=pki.ca_file) as client:
            assert (await client.get(srv.url)).json() == {"tls": 1}
        async with HttpClient(timeouts=QUICK) as client:  # the system's roots alone: not trusted
            with pytest.raises(ConnectFailed) as caught:
                await client.get(srv.url)
    assert caught.value.failure == "ssl_unknown_authority"
    assert len(srv.heads) == 1  # nothing was sent to the untrusted server


async def test_a_missing_ca_file_is_a_configuration_error_not_a_network_failure(tmp_path: Path) -> None:
    async with HttpClient(timeouts=QUICK, ca_file=str(tmp_path / "absent.pem")) as client:
        with pytest.raises(FileNotFoundError):
            await client.get("https://127.0.0.1:9/")


async def test_https_checks_the_name(pki) -> None:
    tls = pki.server_context("other.example")
    async with serving(answer_each(response(b"{}")), tls=tls, scheme="https") as srv:
        async with HttpClient(timeouts=QUICK, ca_file=pki.ca_file) as client:
            with pytest.raises(ConnectFailed) as caught:
                await client.get(srv.url)
    # An IP-address mismatch is OpenSSL's verify code 64, which core/failures.py files under
    # ssl_invalid_certificate (a name mismatch, code 62, is ssl_invalid_hostname).
    assert caught.value.failure in ("ssl_invalid_hostname", "ssl_invalid_certificate")
    assert srv.heads == []


@pytest.mark.parametrize(
    "answer",
    [
        response(b"x" * 5000),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"3e8\r\n" + b"x" * 1000 + b"\r\n") * 2
        + b"0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_cap_is_refused(answer: bytes) -> None:
    async with serving(answer_each(answer)) as srv:
        async with HttpClient(timeouts=QUICK, max_body=1500) as client:
            with pytest.raises(ResponseTooLarge) as caught:
                await client.get(srv.url)
    assert caught.value.failure == "response_too_large"


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (b"", "eof_error"),  # closed before a byte of answer (a fresh connection: not retried)
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", "eof_error"),
        (b"SSH-2.0-OpenSSH_9.6\r\nnot http\r\n\r\n", "http_invalid_response"),
    ],
    ids=["nothing", "truncated", "not-http"],
)
async def test_a_broken_answer_is_a_bad_response(answer: bytes, failure: str) -> None:
    async def then_close(received: Received, reader, writer) -> None:
        await received.read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with serving(then_close) as srv:
        async with HttpClient(timeouts=QUICK) as client:
            with pytest.raises(BadResponse) as caught:
                await client.get(srv.url)
    assert caught.value.failure == failure and len(srv.peers) == 1


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "/api/v1/geolocate", "http://127.0.0.1:99999/"])
async def test_an_unusable_url_is_our_fault(url: str) -> None:
    async with HttpClient(timeouts=QUICK) as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.get(url)
    assert caught.value.failure == "invalid_url"


async def test_a_closed_client_refuses_requests() -> None:
    client = HttpClient()
    await client.close()
    with pytest.raises(RuntimeError):
        await client.get("http://127.0.0.1:9/")

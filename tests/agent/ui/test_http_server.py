"""The page's HTTP server alone (no gate): keep-alive, HEAD, malformed input, a handler that fails."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gatewatch.agent.ui import http_server
from gatewatch.agent.ui.http_server import LocalServer, Request, Response


async def _serve(handler) -> tuple[LocalServer, int]:  # type: ignore[no-untyped-def]
    server = LocalServer(handler, (("X-Test", "1"),))
    return server, await server.start("127.0.0.1", 0)


async def _exchange(port: int, data: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 20) if not read_until_close else reader.read(), 10)
    finally:
        writer.close()


async def test_keep_alive_head_and_errors() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return Response(200, b"hello")

    server, port = await _serve(handler)
    try:
        two = (
            b"GET /a HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
            b"GET /b?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = await _exchange(port, two)
        assert answer.count(b"HTTP/1.1 200") == 2 and answer.count(b"X-Test: 1") == 2
        assert [r.path for r in seen] == ["/a", "/b"] and seen[0].headers["cookie"] == "a=1; b=2"
        assert seen[1].query == {"q": "1"}
        head = await _exchange(port, b"HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and not head.endswith(b"hello")
        boom = await _exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert boom.startswith(b"HTTP/1.1 500")
        garbage = await _exchange(port, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        # A client that opens a connection and sends nothing is not answered, and the server goes on.
        with socket.create_connection(("127.0.0.1", port)):
            assert (
                await _exchange(port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            ).startswith(b"HTTP/1.1 200")
    finally:
        await server.close()


async def test_a_connection_says_when_it_served_its_last_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_server, "MAX_REQUESTS_PER_CONNECTION", 2)

    async def handler(request: Request) -> Response:
        return Response(200, b"ok")

    server, port = await _serve(handler)
    try:
        three = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3
        answer = await _exchange(port, three)  # the server closes after the second
        assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.count(b"Connection: close") == 1
    finally:
        await server.close()

"""A started lab per test, and raw clients (plain sockets, ssl, HTTP/1.1 bytes) that bind a network's source.

The clients are blocking on purpose: tests run them with ``asyncio.to_thread`` while the lab serves on the
test's event loop, the way an independent program would talk to it. Every one has a timeout.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import dns.message
import pytest

from gatewatch.lab import Lab


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with await Lab.start() as started:
        yield started


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def connect(source: str, address: str, port: int, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout, source_address=(source, 0))


def _read_to_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def http_get(source: str, address: str, port: int, host: str, *, method: str = "GET") -> RawResponse:
    """One HTTP/1.1 request over a fresh connection from ``source``; reads until the server closes."""
    with connect(source, address, port) as sock:
        sock.sendall(f"{method} / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
        return parse_response(_read_to_eof(sock))


def tls_client_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def https_get(source: str, address: str, port: int, server_name: str, ca_file: str) -> RawResponse:
    """TLS (validated against ``ca_file`` for ``server_name``) then one HTTP/1.1 request."""
    with (
        connect(source, address, port) as raw,
        tls_client_context(ca_file).wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode())
        return parse_response(_read_to_eof(tls))


def udp_replies(source: str, resolver: str, query: dns.message.Message, listen: float = 0.3) -> list[bytes]:
    """Every datagram answering ``query`` within ``listen`` seconds (an injector's and the resolver's)."""
    host, port = resolver.rsplit(":", 1)
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(query.to_wire(), (host, int(port)))
        deadline = time.monotonic() + listen
        for _ in range(16):  # bounded in count as well as in time
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                replies.append(sock.recv(4096))
            except TimeoutError:
                break
    return replies

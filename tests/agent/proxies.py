"""Small real proxies for the agent's tests, on loopback: a SOCKS5 server (RFC 1928/1929) and an HTTP
CONNECT proxy. Each records what it saw (the target asked for, the credentials given) and relays bytes.

Targets are resolved the way a real proxy does, but only loopback is ever connected to: any other target
address is refused (SOCKS reply 2, HTTP 403), so a test cannot send traffic off the machine. A name given to
the SOCKS server resolves through ``names`` (a test's own map, e.g. ``collector.test`` -> ``127.0.0.1``),
never through the system: these tests must show that only the proxy knows the collector's name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from dataclasses import dataclass, field

_RELAY_CHUNK = 65536
_HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Seen:
    """One tunnel asked of a proxy."""

    host: str  # as the client sent it: a name (remote resolution) or an address
    port: int
    address_type: str  # "name", "ipv4", "ipv6" (SOCKS); "authority" (HTTP CONNECT)
    username: str | None = None
    password: str | None = None


@dataclass
class _Proxy:
    names: dict[str, str] = field(default_factory=dict)
    credentials: tuple[str, str] | None = None  # required when set (any pair accepted when "any")
    accept_any_credentials: bool = False
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> _Proxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def __aenter__(self) -> _Proxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _target_address(self, host: str) -> str | None:
        host = self.names.get(host, host)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None  # an unknown name: these proxies resolve nothing else
        return str(ip) if ip.is_loopback else None  # loopback only, ever

    def _credentials_ok(self, username: str | None, password: str | None) -> bool:
        if self.accept_any_credentials:
            return username is not None
        if self.credentials is None:
            return True
        return (username, password) == self.credentials

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
                upstream = await self._handshake(reader, writer)
            if upstream is not None:
                await _relay(reader, writer, *upstream)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closing: a cancelled connection task is the expected end, not an error to report
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        raise NotImplementedError


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(_RELAY_CHUNK):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.close()

    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        up_writer.close()


class Socks5Server(_Proxy):
    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5:
            return None
        wants_auth = self.credentials is not None or self.accept_any_credentials
        method = 2 if wants_auth else 0
        if method not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, method]))
        username = password = None
        if method == 2:
            _, ulen = await reader.readexactly(2)
            username = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = self._credentials_ok(username, password)
            writer.write(bytes([1, 0 if ok else 1]))
            if not ok:
                return None
        _, command, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host, kind = str(ipaddress.IPv4Address(await reader.readexactly(4))), "ipv4"
        elif atyp == 4:
            host, kind = str(ipaddress.IPv6Address(await reader.readexactly(16))), "ipv6"
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host, kind = (await reader.readexactly(length)).decode(), "name"
        else:
            return None
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.seen.append(Seen(host, port, kind, username, password))
        target = self._target_address(host)
        if command != 1 or target is None:
            writer.write(bytes([5, 2 if target is None else 7, 0, 1]) + bytes(6))
            return None
        try:
            upstream = await asyncio.open_connection(target, port)
        except OSError:
            writer.write(bytes([5, 5, 0, 1]) + bytes(6))
            return None
        writer.write(bytes([5, 0, 0, 1]) + bytes(4) + bytes(2))
        return upstream


class ConnectProxy(_Proxy):
    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, authority, _ = request_line.split(" ", 2)
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        username = password = None
        scheme, _, token = headers.get("proxy-authorization", "").partition(" ")
        if scheme.lower() == "basic":
            username, _, password = base64.b64decode(token).decode().partition(":")
        host, _, port_text = authority.rpartition(":")
        host = host.strip("[]")
        self.seen.append(Seen(host, int(port_text), "authority", username, password))
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return None
        if (self.credentials or self.accept_any_credentials) and not self._credentials_ok(username, password):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            return None
        target = self._target_address(host)
        if target is None:
            writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            return None
        try:
            upstream = await asyncio.open_connection(target, int(port_text))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            return None
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return upstream

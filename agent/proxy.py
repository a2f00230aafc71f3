"""How the agent's collector calls reach the collector: through a SOCKS5 or an HTTP CONNECT proxy, or
to a CDN front, as a :class:`Route` says. Only the agent's collector calls take a route; the probes open
their own sockets and never go through a proxy (a measurement through a proxy would measure the proxy's
network, not the volunteer's).

- ``socks5h://[user:pass@]host:port``: SOCKS5 (RFC 1928) with the collector's *name* sent to the proxy,
  which resolves it: the local resolver (and the gateway watching it) never sees that name. Tor's
  SocksPort is one; ``.onion`` addresses need it.
- ``socks5://...``: SOCKS5 with the name resolved locally and the address sent.
- ``http://[user:pass@]host:port``: an HTTP CONNECT tunnel (basic auth when credentials are given); the
  proxy resolves the name.

Username/password authentication is RFC 1929. Every read is bounded in size and in time (the caller's
connect timeout covers the handshake), and every failure is a :class:`ProxyError` with a short string
fit for ``status`` (``proxy_auth_failed``, ``proxy_refused: host_unreachable``...). No library for this:
python-socks and aiohttp-socks are built for aiohttp/anyio connectors, the agent's client is a few
asyncio streams, and the two handshakes are ~100 lines that must be read by whoever reviews what the agent
sends.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "PROXY_AUTH_FAILED",
    "PROXY_BAD_ANSWER",
    "PROXY_REFUSED",
    "ProxyError",
    "ProxySpec",
    "Route",
    "TOR_DEFAULT",
    "is_onion",
    "new_stream_group",
    "open_stream",
    "open_tunnel",
    "parse_proxy",
    "socks5_address",
]

ProxyScheme = Literal["socks5", "socks5h", "http"]
TOR_DEFAULT: Final = "127.0.0.1:9050"  # Tor's default SocksPort
PROXY_AUTH_FAILED: Final = "proxy_auth_failed"
PROXY_BAD_ANSWER: Final = "proxy_bad_answer"  # the proxy did not speak its protocol
PROXY_REFUSED: Final = "proxy_refused"  # the proxy answered but would not connect (reason follows)
_SOCKS_VERSION = 5
_NO_AUTH, _USER_PASS, _NO_METHOD = 0, 2, 0xFF
_CONNECT = 1
_ATYP_V4, _ATYP_NAME, _ATYP_V6 = 1, 3, 4
# RFC 1928's reply codes, in words.
_SOCKS_REPLIES: Final = {
    1: "general_failure",
    2: "not_allowed",
    3: "network_unreachable",
    4: "host_unreachable",
    5: "connection_refused",
    6: "ttl_expired",
    7: "command_not_supported",
    8: "address_type_not_supported",
}
_MAX_HTTP_HEAD = 16 * 1024  # a CONNECT answer's status line and headers


class ProxyError(Exception):
    """The proxy could not be used: ``failure`` is a short string for ``status``."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(f"{failure} ({detail})" if detail else failure)
        self.failure = failure


@dataclass(frozen=True)
class ProxySpec:
    scheme: ProxyScheme
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def remote_dns(self) -> bool:
        """True when the proxy, not the agent, resolves the collector's name."""
        return self.scheme != "socks5"

    def public_url(self) -> str:
        """The proxy as ``scheme://host:port``, without credentials (fit for status and logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_proxy(url: str) -> ProxySpec:
    """A proxy URL (``socks5h://``, ``socks5://`` or ``http://``, optional ``user:pass@``, a port).
    Raises ValueError with a sentence for the volunteer."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a proxy URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("socks5", "socks5h", "http"):
        raise ValueError(f"proxy {url!r}: the scheme must be socks5h://, socks5:// or http://")
    if not parts.hostname or port is None:
        raise ValueError(f"proxy {parts.scheme}://{parts.hostname or ''}: give a host and a port")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("a proxy URL has no path or query")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxySpec(scheme, parts.hostname, port, username, password)  # type: ignore[arg-type]


def is_onion(host: str) -> bool:
    return host.lower().rstrip(".").endswith(".onion")


@dataclass(frozen=True)
class Route:
    """How to reach one collector address: through ``proxy`` (or directly), connecting to ``front`` (a
    CDN's name, also the TLS SNI) instead of the URL's host when set. With ``isolate`` (Tor), each stream
    group gets its own random SOCKS credentials, so Tor (IsolateSOCKSAuth, on by default) puts it on a
    circuit of its own."""

    proxy: ProxySpec | None = None
    front: str | None = None
    isolate: bool = False

    def credentials(self, group: str) -> tuple[str | None, str | None]:
        if self.proxy is None:
            return None, None
        if self.isolate:
            return f"gatewatch-{group}", group
        return self.proxy.username, self.proxy.password

    def reaches(self, host: str) -> bool:
        """False for a .onion host without a SOCKS proxy that resolves names (Tor): such a name must never
        reach a resolver, nor a proxy that cannot know it."""
        return not is_onion(host) or (self.proxy is not None and self.proxy.scheme == "socks5h")

    def describe(self) -> str:
        """``direct``, ``via socks5h://127.0.0.1:9050``, ``fronted by cdn.example.net``, ... (no secrets)."""
        parts = []
        if self.front:
            parts.append(f"fronted by {self.front}")
        if self.proxy is not None:
            parts.append(("tor " if self.isolate else "") + f"via {self.proxy.public_url()}")
        return ", ".join(parts) or "direct"


def new_stream_group() -> str:
    """A fresh random isolation token (never derived from anything about the volunteer)."""
    return secrets.token_hex(8)


async def open_stream(
    route: Route,
    host: str,
    port: int,
    *,
    group: str,
    ssl_context: ssl.SSLContext | None,
    source_address: str | None = None,
    limit: int = 65536,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to ``host:port`` (TLS with ``ssl_context`` when given, naming ``host``) directly or
    through the route's proxy, whose credentials come from ``group`` when the route isolates. The caller
    bounds it in time."""
    if route.proxy is None:
        return await asyncio.open_connection(
            host,
            port,
            ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None,
            local_addr=(source_address, 0) if source_address else None,
            limit=limit,
        )
    reader, writer = await open_tunnel(
        route.proxy,
        host,
        port,
        credentials=route.credentials(group),
        source_address=source_address,
        limit=limit,
    )
    if ssl_context is not None:
        try:
            await writer.start_tls(ssl_context, server_hostname=host)
        except BaseException:
            writer.transport.abort()
            raise
    return reader, writer


async def open_tunnel(
    proxy: ProxySpec,
    host: str,
    port: int,
    *,
    credentials: tuple[str | None, str | None] = (None, None),
    source_address: str | None = None,
    limit: int = 65536,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to ``host:port`` through ``proxy``, handshake done. The caller bounds it in time. Raises
    :class:`ProxyError` for the proxy's refusals and OSError for the network's failures."""
    if is_onion(host) and proxy.scheme != "socks5h":
        raise ProxyError(PROXY_REFUSED, "a .onion address needs a socks5h:// proxy (Tor)")
    reader, writer = await asyncio.open_connection(
        proxy.host,
        proxy.port,
        local_addr=(source_address, 0) if source_address else None,
        limit=limit,
    )
    try:
        if proxy.scheme == "http":
            await _http_connect(reader, writer, host, port, credentials)
        else:
            target = host if proxy.remote_dns else await _resolve(host, port)
            await _socks5_connect(reader, writer, target, port, credentials)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def _resolve(host: str, port: int) -> str:
    """``socks5://``: the agent resolves the name itself (the first address the system gives)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
    return str(infos[0][4][0])


def socks5_address(host: str) -> bytes:
    """RFC 1928's ATYP and address for ``host`` (an IP literal as such, else a name)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            name = host.encode("idna")
        except UnicodeError:
            name = b""
        if not 0 < len(name) < 256:
            raise ProxyError(PROXY_REFUSED, "not a host name SOCKS5 can carry") from None
        return bytes([_ATYP_NAME, len(name)]) + name
    return bytes([_ATYP_V4 if ip.version == 4 else _ATYP_V6]) + ip.packed


async def _socks5_connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    credentials: tuple[str | None, str | None],
) -> None:
    username, password = credentials
    method = _USER_PASS if username is not None else _NO_AUTH
    writer.write(bytes([_SOCKS_VERSION, 1, method]))
    version, chosen = await _read(reader, 2)
    if version != _SOCKS_VERSION:
        raise ProxyError(PROXY_BAD_ANSWER, "not a SOCKS5 proxy")
    if chosen == _NO_METHOD or chosen != method:
        raise ProxyError(PROXY_AUTH_FAILED, "the proxy accepts none of our authentication methods")
    if method == _USER_PASS:
        user, secret = (username or "").encode(), (password or "").encode()
        if len(user) > 255 or len(secret) > 255:
            raise ProxyError(PROXY_AUTH_FAILED, "username or password longer than 255 bytes")
        writer.write(bytes([1, len(user)]) + user + bytes([len(secret)]) + secret)
        _, status = await _read(reader, 2)
        if status != 0:
            raise ProxyError(PROXY_AUTH_FAILED, "the proxy refused the username and password")
    writer.write(bytes([_SOCKS_VERSION, _CONNECT, 0]) + socks5_address(host) + port.to_bytes(2, "big"))
    version, reply, _, atyp = await _read(reader, 4)
    if version != _SOCKS_VERSION:
        raise ProxyError(PROXY_BAD_ANSWER, "not a SOCKS5 reply")
    if reply != 0:
        raise ProxyError(f"{PROXY_REFUSED}: {_SOCKS_REPLIES.get(reply, f'code_{reply}')}")
    if atyp == _ATYP_V4:
        await _read(reader, 4 + 2)
    elif atyp == _ATYP_V6:
        await _read(reader, 16 + 2)
    elif atyp == _ATYP_NAME:
        (length,) = await _read(reader, 1)
        await _read(reader, length + 2)
    else:
        raise ProxyError(PROXY_BAD_ANSWER, f"unknown address type {atyp}")


async def _http_connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    credentials: tuple[str | None, str | None],
) -> None:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    username, password = credentials
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProxyError(PROXY_BAD_ANSWER, "the CONNECT answer's head is too long") from None
    except asyncio.IncompleteReadError:
        raise ProxyError(PROXY_BAD_ANSWER, "the proxy closed the connection") from None
    if len(head) > _MAX_HTTP_HEAD:
        raise ProxyError(PROXY_BAD_ANSWER, "the CONNECT answer's head is too long")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProxyError(PROXY_BAD_ANSWER, "not an HTTP proxy")
    status = int(parts[1])
    if status == 407:
        raise ProxyError(PROXY_AUTH_FAILED, "the proxy asks for (other) credentials")
    if not 200 <= status < 300:
        raise ProxyError(f"{PROXY_REFUSED}: http_{status}")


async def _read(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProxyError(PROXY_BAD_ANSWER, "the proxy closed the connection mid-handshake") from None

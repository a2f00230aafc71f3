"""The web measurement: DNS -> TCP to each address -> TLS (https) -> one HTTP GET, following redirects.

Safety: the probe only connects to addresses that DNS (or the caller, through ``extra_addrs``) gave for
the host being fetched, and never to a bogon: a censor's answer such as 10.10.34.35 is recorded and
judged, not visited, so a volunteer's machine never sends traffic into a private range on its behalf.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from gatewatch.core import failures
from gatewatch.core.bogons import is_bogon_remembered
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import DNSQuery, HTTPRequest, HTTPTransaction, TCPConnect, TLSHandshake

from . import dns, http, tcp, tls
from .config import WebConfig
from .connection import Connection, PlainConnection, format_address, may_be_ip_literal
from .trace import Trace

__all__ = ["measure"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # ASCII (IDNA) name or IP literal without brackets
    port: int
    host_header: str


def _ascii_host(host: str) -> str:
    if may_be_ip_literal(host):
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
    try:
        name = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"not a valid host name: {host!r}") from exc
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError(f"not a valid host name: {host!r}")
    return name


def _parse(url: str) -> _Target:
    """Split an http(s) URL into what each step needs; ValueError for anything else."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an http or https URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    host = _ascii_host(parts.hostname)
    explicit_port = parts.port  # raises ValueError when out of range
    port = explicit_port or _DEFAULT_PORTS[scheme]
    host_header = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header += f":{port}"
    return _Target(url=url, scheme=scheme, host=host, port=port, host_header=host_header)


def _candidates(addresses: Sequence[str], routable: tuple[str, ...], limit: int) -> list[str]:
    chosen: list[str] = []
    for address in addresses:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            continue
        if is_bogon_remembered(address, tuple(routable)) or address in chosen:
            continue  # a bogon is recorded (in the DNS answers) and judged, never visited
        chosen.append(address)
    return chosen[:limit]


def _blocking_failure(
    queries: list[DNSQuery],
    addresses: list[str],
    connects: list[TCPConnect],
    handshakes: list[TLSHandshake],
) -> str:
    """The failure of the step that left no usable connection, as OONI reports it on the request."""
    if not addresses:
        failed = [q.failure for q in queries if q.failure is not None]
        return failed[0] if failed else failures.DNS_NO_ANSWER
    if not connects:
        return failures.DNS_BOGON_ERROR  # every address was a bogon: nothing was connected to
    for record in (*connects, *handshakes):
        if record.failure is not None:
            return record.failure
    return failures.UNKNOWN_FAILURE


async def _hop(
    target: _Target,
    extra_addrs: Sequence[str],
    keys: WebTestKeys,
    config: WebConfig,
    trace: Trace,
    on_resolved: Callable[[list[str]], None] | None = None,
) -> dns.Resolution:
    """One URL: its own DNS/TCP/TLS/HTTP, appended to ``keys`` (but its DNS queries).

    Connecting starts as soon as the resolver's first reply is in; the DNS queries keep listening for late
    replies meanwhile: the resolution is returned still listening, for the caller to record its queries
    (in hop order) once every hop is done, so that the lingers of a redirect chain overlap instead of
    adding up."""
    resolution = await dns.resolve_early(target.host, config.dns, trace)
    if on_resolved is not None:
        on_resolved(list(resolution.addresses))
    try:
        await _connect_and_fetch(target, resolution, extra_addrs, keys, config, trace)
    except BaseException:
        resolution.cancel()
        raise
    return resolution


async def _connect_and_fetch(
    target: _Target,
    resolution: dns.Resolution,
    extra_addrs: Sequence[str],
    keys: WebTestKeys,
    config: WebConfig,
    trace: Trace,
) -> None:
    addresses = resolution.addresses
    candidates = _candidates([*addresses, *extra_addrs], config.dns.routable, config.tcp.max_addresses)
    opened: list[socket.socket] = []
    conns: list[Connection] = []

    async def connect(ip: str) -> tuple[TCPConnect, socket.socket | None]:
        record, sock = await tcp.connect(ip, target.port, config.tcp, trace)
        if sock is not None:
            opened.append(sock)  # closed in `finally` even if the measurement is cancelled
        return record, sock

    try:
        connected = await asyncio.gather(*(connect(ip) for ip in candidates))
        keys.tcp_connect.extend(record for record, _ in connected)
        sockets = [(format_address(r.ip, r.port), s) for r, s in connected if s is not None]
        handshakes: list[TLSHandshake] = []
        if target.scheme == "https":
            done = await asyncio.gather(
                *(tls.handshake(s, address, target.host, config.tls, trace) for address, s in sockets)
            )
            handshakes = [record for record, _ in done]
            keys.tls_handshakes.extend(handshakes)
            conns = [conn for _, conn in done if conn is not None]
            # Never send a request over a connection whose certificate did not validate.
            usable = [conn for conn in conns if conn.validated]
        else:
            conns = [PlainConnection(s, address) for address, s in sockets]
            usable = conns
        if usable:
            keys.requests.append(
                await http.fetch(usable[0], target.url, target.host_header, config.http, trace)
            )
        else:
            now = trace.now()
            queries = await resolution.queries() if not addresses else []
            failure = _blocking_failure(queries, addresses, [r for r, _ in connected], handshakes)
            keys.requests.append(
                HTTPTransaction(
                    t0=now,
                    t=now,
                    transport="tls" if target.scheme == "https" else "tcp",
                    request=HTTPRequest(url=target.url),
                    failure=failure,
                )
            )
    finally:
        for conn in conns:
            conn.close()
        for sock in opened:
            sock.close()


def _redirect(transaction: HTTPTransaction) -> str | None:
    response = transaction.response
    if transaction.failure is not None or response is None or not 300 <= response.code < 400:
        return None
    if response.code == 304:
        return None
    for name, value in response.headers:
        if name.lower() == "location" and value.strip():
            return value.strip()
    return None


async def measure(
    url: str,
    config: WebConfig = WebConfig(),  # noqa: B008 - frozen, so one shared default is safe
    *,
    trace: Trace | None = None,
    extra_addrs: Sequence[str] = (),
    on_resolved: Callable[[list[str]], None] | None = None,
    on_network_done: Callable[[], None] | None = None,
) -> WebTestKeys:
    """Measure ``url``; network failures are recorded, never raised.

    ``extra_addrs`` are more addresses for the URL's own host (e.g. from a control); redirect hops to
    other hosts use only their own DNS. ``on_resolved`` is called once, with the addresses of the URL's
    own host as soon as its resolver's first reply is in (before connecting): the agent asks for its
    control then, so that the control is measured while this measurement goes on. ``on_network_done`` is
    called once, when the last connection is closed and only the DNS queries' linger for late replies
    remains (a quarter of a second, most of a measurement on a fast network): the agent starts its next
    URL then. It is not called when the measurement fails or is cancelled.

    When a hop gets no usable connection, its request entry carries the failure of the step that stopped
    it (DNS, TCP or TLS), as OONI's web_connectivity does.
    Raises ``ValueError`` for a URL that is not http(s) or has no valid host.
    """
    trace = trace if trace is not None else Trace()
    target = _parse(url)
    keys = WebTestKeys()
    resolutions: list[dns.Resolution] = []
    try:
        await _follow(target, extra_addrs, keys, config, trace, on_resolved, resolutions)
        if on_network_done is not None:
            on_network_done()
        for resolution in resolutions:  # in hop order, as a stub resolver asked them
            keys.queries.extend(await resolution.queries())
    except BaseException:
        for resolution in resolutions:
            resolution.cancel()
        raise
    return keys


async def _follow(
    target: _Target,
    extra_addrs: Sequence[str],
    keys: WebTestKeys,
    config: WebConfig,
    trace: Trace,
    on_resolved: Callable[[list[str]], None] | None,
    resolutions: list[dns.Resolution],
) -> None:
    """Every hop of the redirect chain, each hop's resolution appended to ``resolutions``."""
    first_host = target.host
    for _ in range(config.http.max_redirects + 1):
        extra = extra_addrs if target.host == first_host else ()
        resolutions.append(await _hop(target, extra, keys, config, trace, on_resolved))
        on_resolved = None  # the first hop's addresses only: redirects go to other URLs
        location = _redirect(keys.requests[-1])
        if location is None:
            return
        try:
            target = _parse(urljoin(target.url, location))
        except ValueError:
            return  # a Location the probe cannot follow (another scheme, a bad host) ends the chain
    keys.requests[-1] = keys.requests[-1].model_copy(update={"failure": failures.HTTP_TOO_MANY_REDIRECTS})

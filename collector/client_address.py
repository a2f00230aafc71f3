"""The submitting client's address, seen through the operator's own load balancers.

Behind a proxy the connection's peer is the proxy, so the client is named in ``X-Forwarded-For`` (or RFC
7239 ``Forwarded: for=``). Anyone can send those headers, so they are read only when the peer is one of
``Settings.trusted_proxies``, and then from the right: each trusted proxy appends the address it saw, so
the right-most address that is not a trusted proxy is the first one no proxy of ours vouches for (the
client, or what the client claimed; every entry left of it is the client's own say).

``X-Forwarded-For`` is read when present, ``Forwarded`` only without it: the common proxies (nginx,
HAProxy, cloud load balancers) append to ``X-Forwarded-For`` and pass ``Forwarded`` through untouched, so
preferring ``Forwarded`` would let a client choose its address. A proxy that writes only ``Forwarded``
must drop a client's ``X-Forwarded-For``.

The address is for geolocation alone: callers never log, store or count it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from .appkeys import SETTINGS_KEY

__all__ = ["client_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A chain longer than this is not from any real proxy path; its excess is ignored rather than parsed.
_MAX_HOPS = 32


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    # Settings validated these; parsing once per distinct tuple keeps the per-request cost to a few compares.
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _parse(value: str) -> Address | None:
    """An address from one hop: ``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:443``, ``2001:db8::1``,
    optionally quoted; None for ``unknown``, obfuscated identifiers (``_hidden``) and garbage."""
    text = value.strip().strip('"').strip()
    if text.startswith("["):
        text, sep, _rest = text[1:].partition("]")
        if not sep:
            return None
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has two colons or more)
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _unmapped(ip)


def _unmapped(ip: Address) -> Address:
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; trusted ranges are written as IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _forwarded_for(header_values: list[str]) -> list[str]:
    """The ``for=`` value of each element of RFC 7239 ``Forwarded`` headers, in order (an element
    without one counts as an unknown hop)."""
    hops: list[str] = []
    for header in header_values:
        for element in header.split(","):
            value = ""
            for pair in element.split(";"):
                name, sep, raw = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    value = raw
            hops.append(value)
    return hops


def _hops(request: web.Request) -> list[str]:
    forwarded_for = request.headers.getall("X-Forwarded-For", [])
    if forwarded_for:
        return [hop for header in forwarded_for for hop in header.split(",")]
    return _forwarded_for(request.headers.getall("Forwarded", []))


def client_address(request: web.Request) -> str | None:
    """The client's address: the right-most untrusted hop of the forwarding headers when the peer is a
    trusted proxy, else the peer itself (``request.remote``). A header that is absent or cannot be read
    (garbage, ``unknown``) leaves the peer: the proxy's address, never an error."""
    peer = request.remote
    networks = _networks(request.app[SETTINGS_KEY].trusted_proxies)
    if not peer or not networks:
        return peer
    peer_ip = _parse(peer)
    if peer_ip is None or not _trusted(peer_ip, networks):
        return peer
    hops = _hops(request)
    if not hops:
        return peer
    truncated = len(hops) > _MAX_HOPS
    hops = hops[-_MAX_HOPS:]
    leftmost: Address | None = None
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            # Every hop to its right is one of our proxies, and this one is unreadable (garbage, "unknown"):
            # nothing beyond our proxies is known, so the peer is the best answer.
            return peer
        if not _trusted(ip, networks):
            return str(ip)
        leftmost = ip
    if truncated:  # what lies beyond the hops looked at is unknown
        return peer
    # Every hop is one of our proxies: the request began inside them (a health check, an internal client).
    return str(leftmost) if leftmost is not None else peer


def _trusted(ip: Address, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)

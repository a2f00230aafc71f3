"""Bogon addresses: answers no public name should resolve to (private, loopback, link-local, reserved).

A censor's resolver often answers with one (10.10.34.35, 127.0.0.1, 0.0.0.0). The same test keeps the web
probe (and so the collector's control endpoint) from ever connecting into a private network, so it is
explicit rather than left to ``ipaddress.is_global`` (whose answers have changed between Python releases),
and it looks inside IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo).

Labs whose whole "internet" lives in 127.0.0.0/8 declare that range routable, so that their servers are not
mistaken for bogons. A declared range allows only addresses of its own family: an IPv4 range never allows
an IPv6 address that merely embeds one of its addresses (IPv4-compatible ``::7f00:1``, NAT64
``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::1``, Teredo), because a connection to those goes to a translator
or relay, somewhere else than the allowed IPv4 host. The one exception is the IPv4-*mapped* form
(``::ffff:127.0.0.1``, RFC 4291 2.5.5.2): it is not an IPv6 destination at all but the way a dual-stack
socket spells the IPv4 address itself, and a connection to it reaches exactly that IPv4 host, so it is
allowed by the IPv4 ranges (and only by them or by an IPv6 range holding the mapped form).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["embedded_v4", "is_bogon", "is_bogon_remembered", "routable_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA special-purpose registries (RFC 6890 and successors): nothing here is reachable as a public site.
_V4_BOGONS = tuple(
    ipaddress.IPv4Network(c)
    for c in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
_V6_BOGONS = tuple(
    ipaddress.IPv6Network(c)
    for c in (
        "::/8", "100::/64", "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
        "2001::/32",  # Teredo (its client address is unwrapped below; the relay itself is no site)
    )
)  # fmt: skip
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
# Only 2000::/3 is allocated as global unicast; everything else in IPv6 is reserved or special.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


@lru_cache(maxsize=64)
def routable_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries, if it is one of the forms that route to IPv4 (v4-mapped, 6to4,
    Teredo's client, NAT64, IPv4-compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (int(ip) >> 32 == 0 and int(ip) > 1):  # NAT64, IPv4-compatible
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_bogon(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _V4_BOGONS)
    inner = embedded_v4(ip)
    if inner is not None and any(inner in net for net in _V4_BOGONS):
        return True
    if ip in _SIX_TO_FOUR or any(ip in net for net in _NAT64):
        return inner is None
    return ip not in _V6_GLOBAL_UNICAST or any(ip in net for net in _V6_BOGONS)


def is_bogon(address: str, routable: Iterable[str] = ()) -> bool:
    """True when ``address`` is not a publicly routable unicast address (and not in ``routable``).

    An unparseable address counts as a bogon: it cannot be a real answer.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    nets = routable_networks(tuple(routable))
    if nets:
        candidates: list[Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # the IPv4 address itself (see the module's docstring)
        if any(c in net for c in candidates for net in nets if c.version == net.version):
            return False
    return _is_bogon(ip)


# Distinct (address, routable) pairs remembered: probes and ingest meet the same sites' addresses again and
# again, and the answer is a pure function of the two. Text longer than any address is tested uncached, so
# that junk in an answer cannot crowd the cache.
_REMEMBERED = 4096
_LONGEST_ADDRESS = 64
_remembered = lru_cache(maxsize=_REMEMBERED)(is_bogon)


def is_bogon_remembered(address: str, routable: tuple[str, ...] = ()) -> bool:
    """:func:`is_bogon`, remembered (``routable`` a tuple: hashable)."""
    if len(address) > _LONGEST_ADDRESS:
        return is_bogon(address, routable)
    return _remembered(address, routable)

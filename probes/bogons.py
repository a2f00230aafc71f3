"""Bogon addresses: answers no public name should resolve to (private, loopback, link-local, reserved).

A censor's resolver often answers with one (10.10.34.35, 127.0.0.1, 0.0.0.0). Labs whose whole "internet"
lives in 127.0.0.0/8 declare that range routable, so that their servers are not mistaken for bogons.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["is_bogon", "routable_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def routable_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def is_bogon(address: str, routable: Iterable[str] = ()) -> bool:
    """True when ``address`` is not a globally routable unicast address (and not in ``routable``).

    An unparseable address counts as a bogon: it cannot be a real answer.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in routable_networks(tuple(routable))):
        return False
    return not ip.is_global or ip.is_multicast

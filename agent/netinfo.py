"""What the agent can learn about its own network without sending anything: the local address the
kernel would use toward the collector or toward any public address (both families), the machine's
global IPv6 addresses, and the default gateways. Used to scrub the machine's own and LAN addresses and
to notice a change of network (a laptop moving from home to a café) between measurements.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROUTE_PROBES",
    "NetworkView",
    "default_gateways",
    "global_v6_addresses",
    "local_address_toward",
    "machine_addresses",
    "observe_network",
]

# This process's network namespace (/proc/net follows the thread's; self is explicit about it).
_PROC_ROUTE = Path("/proc/self/net/route")
_PROC_IF_INET6 = Path("/proc/self/net/if_inet6")
# Public resolvers' anycast addresses (Quad9), one per family: only the route toward them is looked up,
# to learn which source address the probes' traffic to the internet would carry. Nothing is sent.
ROUTE_PROBES = ("9.9.9.9", "2620:fe::fe")
_GLOBAL_SCOPE = "00"  # if_inet6's scope column (IPV6_ADDR_ANY)


def local_address_toward(ip: str) -> str | None:
    """The source address the kernel picks for ``ip``. A UDP ``connect`` only selects a route: no
    packet leaves the machine."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((ip, 9))
            return str(sock.getsockname()[0]).split("%")[0]
    except (OSError, ValueError):
        return None


def global_v6_addresses(if_inet6_text: str) -> list[str]:
    """The global-scope addresses of a Linux ``/proc/net/if_inet6`` table (address, ifindex, prefix
    length, scope, flags, name per line). Temporary (privacy) and deprecated ones are kept: they were
    ours, and may still appear in answers."""
    found: list[str] = []
    for line in if_inet6_text.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32 or fields[3] != _GLOBAL_SCOPE:
            continue
        try:
            ip = ipaddress.IPv6Address(int(fields[0], 16))
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            found.append(str(ip))
    return found


def machine_addresses(
    route_probes: tuple[str, ...] = ROUTE_PROBES, if_inet6: Path = _PROC_IF_INET6
) -> list[str]:
    """The machine's own addresses as far as it can tell without sending anything: the source address
    toward each of ``route_probes`` and, where readable, every global IPv6 address of its interfaces
    (a dual-stack machine's probes use IPv6 too). Unclassified: public, LAN and loopback alike."""
    found = [address for address in map(local_address_toward, route_probes) if address]
    try:
        found += global_v6_addresses(if_inet6.read_text())
    except OSError:
        pass  # not Linux, or /proc not mounted: the route lookups are all there is
    return list(dict.fromkeys(found))


def default_gateways(route_table: Path = _PROC_ROUTE) -> list[str]:
    """IPv4 default gateways from Linux's routing table (empty elsewhere)."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            try:
                found.append(str(ipaddress.IPv4Address(int(fields[2], 16).to_bytes(4, "little"))))
            except ValueError:
                continue
    return found


@dataclass(frozen=True)
class NetworkView:
    local_address: str | None
    gateways: tuple[str, ...]

    @property
    def signature(self) -> tuple[str | None, tuple[str, ...]]:
        """Changes when the machine moves to another network (in memory only, never recorded)."""
        return (self.local_address, self.gateways)


def observe_network(collector_ip: str | None, source_address: str | None = None) -> NetworkView:
    local = source_address or (local_address_toward(collector_ip) if collector_ip else None)
    return NetworkView(local_address=local, gateways=tuple(default_gateways()))

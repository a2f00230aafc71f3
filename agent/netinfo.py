"""What the agent can learn about its own network without sending anything: the local address the
kernel would use toward the collector, and the default gateways. Used to scrub LAN addresses and to
notice a change of network (a laptop moving from home to a café) between measurements.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NetworkView", "default_gateways", "local_address_toward", "observe_network"]

_PROC_ROUTE = Path("/proc/net/route")


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

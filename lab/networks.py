"""The lab's address plan: vantage networks, the hosting range, the resolver and the censor's addresses.

Everything lives in 127.0.0.0/8 so that no packet leaves the machine and no privilege is needed: on Linux
the whole /8 is local, so a client may bind any of these source addresses and a server any of these
listening addresses.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

__all__ = [
    "BOGUS_ADDRESS",
    "CENSORED_NETWORKS",
    "CLEAN",
    "HOSTING",
    "INJECTED_ADDRESS",
    "NETWORKS",
    "RESOLVER_ADDRESS",
    "RESOLVER_RANGE",
    "LabNetwork",
    "network_of",
    "server_address",
]


class LabNetwork(NamedTuple):
    name: str
    cidr: str
    source_address: str  # the address a client of this network binds
    asn: int
    network_name: str
    cc: str


CLEAN = "clean"
NETWORKS: dict[str, LabNetwork] = {
    n.name: n
    for n in (
        LabNetwork(CLEAN, "127.0.0.1/32", "127.0.0.1", 64500, "Lab Transit", "XT"),
        LabNetwork("isp-a", "127.65.0.0/16", "127.65.0.10", 64501, "Lab ISP A", "XL"),
        LabNetwork("isp-b", "127.66.0.0/16", "127.66.0.10", 64502, "Lab ISP B", "XL"),
        LabNetwork("isp-c", "127.67.0.0/16", "127.67.0.10", 64503, "Lab ISP C", "XL"),
    )
}
# "all" in a scenario means these: every network behind the national gateway, never the control vantage.
CENSORED_NETWORKS: tuple[str, ...] = tuple(name for name in NETWORKS if name != CLEAN)

HOSTING = LabNetwork("hosting", "127.80.0.0/16", "127.80.0.1", 64600, "Lab Hosting", "XL")
RESOLVER_ADDRESS = "127.53.0.1"
RESOLVER_RANGE = "127.53.0.0/16"
# Where the on-path injector points its forged answers: nothing listens in 127.99.0.0/16.
INJECTED_ADDRESS = "127.99.0.1"
# The censoring resolver's answer: a private address. Probes never connect to bogons and neither does the
# lab, so no packet is ever sent there.
BOGUS_ADDRESS = "10.10.34.35"

_FIRST_SERVER_HOST = 10  # 127.80.0.10 is the first domain's address


def server_address(index: int) -> str:
    """The listening address of the ``index``-th existing domain of a scenario."""
    hosting = ipaddress.IPv4Network(HOSTING.cidr)
    if not 0 <= index < hosting.num_addresses - _FIRST_SERVER_HOST - 1:
        raise ValueError(f"server index {index} out of the hosting range")
    return str(hosting.network_address + _FIRST_SERVER_HOST + index)


def network_of(address: str) -> str | None:
    """The name of the vantage network ``address`` belongs to, or None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for network in NETWORKS.values():
        if ip in ipaddress.ip_network(network.cidr):
            return network.name
    return None

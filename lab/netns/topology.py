"""The namespace lab's network as data: namespaces, links, addresses and the static routes between them.

Pure: nothing here runs a command. The network is a tree rooted at the national gateway, so every route
follows from it: a namespace sends everything it does not know to its parent, and each subnet below one
of its children to that child. Every address is a private 10.77.0.0/16 test address that lives only
inside the namespaces the lab makes.

    vol-a ── isp-a-access ── isp-a-core ──┐
                                          gateway ── intl ── outside
    vol-b ── isp-b ───────────────────────┘

ISP A has two routers of its own, ISP B one, so the gateway is the 3rd hop from vol-a and the 2nd from
vol-b: a localisation that finds the same hop for both would be wrong.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TOPOLOGY",
    "INTL_BLACKHOLED",
    "INTL_DNS",
    "INTL_WEB",
    "Link",
    "Node",
    "Route",
    "Topology",
]

INTL_DNS = "10.77.200.53"  # the international resolver (an open resolver abroad)
INTL_WEB = "10.77.200.80"  # the international web server (http and https for every scenario site)
INTL_BLACKHOLED = "10.77.200.81"  # the same server, on the address the gateway blackholes


@dataclass(frozen=True)
class Node:
    name: str  # short role name; the namespace is "<prefix>-<name>"
    parent: str | None  # towards the gateway (the root has none)
    router: bool = True  # forwards packets
    extra_addresses: tuple[str, ...] = ()  # service addresses on its loopback (/32)


@dataclass(frozen=True)
class Link:
    upper: str  # the parent
    lower: str  # the child
    subnet: str  # a /24: the parent is .1, the child .2

    @property
    def upper_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    @property
    def lower_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 2)


@dataclass(frozen=True)
class Route:
    node: str
    destination: str  # a CIDR or "default"
    via: str


@dataclass(frozen=True)
class Topology:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def link_to_parent(self, name: str) -> Link:
        return next(link for link in self.links if link.lower == name)

    def children(self, name: str) -> list[str]:
        return [node.name for node in self.nodes if node.parent == name]

    def address(self, name: str) -> str:
        """The node's address on the link to its parent (the gateway: on its first child link)."""
        node = self.node(name)
        if node.parent is None:
            return next(link.upper_address for link in self.links if link.upper == name)
        return self.link_to_parent(name).lower_address

    def subnets_below(self, name: str) -> list[str]:
        """Every subnet and service address reachable through ``name`` (its own included)."""
        found = [f"{address}/32" for address in self.node(name).extra_addresses]
        for child in self.children(name):
            found.append(self.link_to_parent(child).subnet)
            found.extend(self.subnets_below(child))
        return found

    def routes(self) -> list[Route]:
        routes: list[Route] = []
        for node in self.nodes:
            if node.parent is not None:
                routes.append(Route(node.name, "default", self.link_to_parent(node.name).upper_address))
            for child in self.children(node.name):
                via = self.link_to_parent(child).lower_address
                for subnet in self.subnets_below(child):
                    if subnet != self.link_to_parent(child).subnet:
                        routes.append(Route(node.name, subnet, via))
        return routes

    def path_to_root(self, name: str) -> list[str]:
        path = [name]
        while (parent := self.node(path[-1]).parent) is not None:
            path.append(parent)
        return path

    def hops_to(self, source: str, router: str) -> int:
        """How many routers a packet from ``source`` crosses up to and including ``router``."""
        path = self.path_to_root(source)
        return path.index(router)


DEFAULT_TOPOLOGY = Topology(
    nodes=(
        Node("gateway", None),
        Node("intl", "gateway", extra_addresses=(INTL_DNS, INTL_WEB, INTL_BLACKHOLED)),
        Node("outside", "intl", router=False),
        Node("isp-a-core", "gateway"),
        Node("isp-a-access", "isp-a-core"),
        Node("vol-a", "isp-a-access", router=False),
        Node("isp-b", "gateway"),
        Node("vol-b", "isp-b", router=False),
    ),
    links=(
        Link("gateway", "intl", "10.77.100.0/24"),
        Link("intl", "outside", "10.77.201.0/24"),
        Link("gateway", "isp-a-core", "10.77.10.0/24"),
        Link("isp-a-core", "isp-a-access", "10.77.11.0/24"),
        Link("isp-a-access", "vol-a", "10.77.12.0/24"),
        Link("gateway", "isp-b", "10.77.20.0/24"),
        Link("isp-b", "vol-b", "10.77.21.0/24"),
    ),
)

"""The namespace lab's routes follow from its tree (pure: no root needed)."""

from __future__ import annotations

import ipaddress

from gatewatch.lab.netns.scenario import NETNS_SITES, SIGNATURES, VOLUNTEER_NETWORKS
from gatewatch.lab.netns.topology import DEFAULT_TOPOLOGY, INTL_DNS, Topology


def _next_hop(topology: Topology, node: str, destination: str) -> str | None:
    """The namespace a packet from ``node`` to ``destination`` goes to next (None: delivered here)."""
    address = ipaddress.ip_address(destination)
    if destination in topology.node(node).extra_addresses:
        return None
    for link in topology.links:
        if node in (link.upper, link.lower) and address in ipaddress.ip_network(link.subnet):
            peer = link.lower if node == link.upper else link.upper
            owner = link.lower if destination == link.lower_address else link.upper
            return None if owner == node else peer
    best = None
    for route in topology.routes():
        if route.node == node and route.destination != "default":
            network = ipaddress.ip_network(route.destination)
            if address in network and (best is None or network.prefixlen > best[0].prefixlen):
                best = (network, route.via)
    via = (
        best[1]
        if best
        else next(r.via for r in topology.routes() if r.node == node and r.destination == "default")
    )
    return next(
        link.upper if via == link.upper_address else link.lower
        for link in topology.links
        if via in (link.upper_address, link.lower_address)
    )


def _path(topology: Topology, source: str, destination: str) -> list[str]:
    path = [source]
    for _ in range(len(topology.nodes)):  # bounded: a loop in the routes fails here
        step = _next_hop(topology, path[-1], destination)
        if step is None:
            return path
        path.append(step)
    raise AssertionError(f"routing loop from {source} to {destination}: {path}")


def test_every_namespace_reaches_every_other_and_volunteers_go_abroad_through_the_gateway() -> None:
    topology = DEFAULT_TOPOLOGY
    for source in topology.nodes:
        for target in topology.nodes:
            assert _path(topology, source.name, topology.address(target.name))[-1] == target.name
    for volunteer, _, _ in VOLUNTEER_NETWORKS.values():
        assert "gateway" in _path(topology, volunteer, INTL_DNS)
        assert _path(topology, volunteer, INTL_DNS)[-1] == "intl"


def test_the_gateway_is_at_a_different_hop_from_each_isp() -> None:
    hops = {
        net: DEFAULT_TOPOLOGY.hops_to(volunteer, "gateway")
        for net, (volunteer, _, _) in VOLUNTEER_NETWORKS.items()
    }
    assert hops == {"isp-a": 3, "isp-b": 2}


def test_every_injected_technique_has_its_own_signature() -> None:
    assert len({(s.ip_id, s.ttl, s.window) for s in SIGNATURES.values()}) == len(SIGNATURES)
    injected = {site.technique for site in NETNS_SITES if site.censor == "gateway"}
    assert injected - {"ip_blackhole"} == set(SIGNATURES)
    assert {site.scope for site in NETNS_SITES} == {"none", "gateway", "isp"}

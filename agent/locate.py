"""Where the agent is, and what identifies it: the network and country a pass records (the collector's
answer, or the volunteer's overrides), and the addresses and names to scrub from every measurement (the
address the collector saw, the machine's own, their reverse-DNS names, the LAN's)."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

from gatewatch.core.bogons import is_bogon
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.core.wire import Geolocation
from gatewatch.probes.config import DNSConfig

from .anonymise import Identity, is_lan_address
from .netinfo import NetworkView, machine_addresses
from .run_records import RunOptions

__all__ = [
    "WITHHELD",
    "apply_overrides",
    "classify_own_addresses",
    "first_address",
    "own_identity",
    "usable_probe_ip",
]

# Where a pass is when it cannot ask (and will not upload): network and country withheld, no address.
WITHHELD = Geolocation(probe_asn=WITHHELD_ASN, probe_cc=WITHHELD_CC, probe_network_name="", probe_ip="")


def usable_probe_ip(probe_ip: str | None, *, lab: bool = False) -> str | None:
    """The collector's view of our address if it can be one of ours on the internet (a global
    address; in a lab, any unicast address), else None. A private or loopback ``probe_ip`` means the
    collector saw a proxy or a NAT of its own, not us: scrubbing it would leave our address in place."""
    try:
        ip = ipaddress.ip_address(probe_ip or "")
    except ValueError:
        return None
    if ip.is_global or (lab and not (ip.is_unspecified or ip.is_multicast)):
        return str(ip)
    return None


def classify_own_addresses(addresses: list[str]) -> tuple[list[str], list[str]]:
    """(public, LAN) among the machine's own addresses; loopback and the like are neither (every
    machine has them)."""
    public: list[str] = []
    lan: list[str] = []
    for address in addresses:
        if is_lan_address(address):
            lan.append(address)
        elif usable_probe_ip(address) is not None:
            public.append(address)
    return public, lan


def apply_overrides(found: Geolocation, probe_asn: str | None, probe_cc: str | None) -> Geolocation:
    """The volunteer's network and country where set (``WITHHELD_ASN``/``WITHHELD_CC`` withhold them)."""
    asn = probe_asn or found.probe_asn
    cc = probe_cc or found.probe_cc
    # A network name from geolocation describes the real network: drop it when the ASN is overridden.
    name = found.probe_network_name if asn == found.probe_asn and asn != WITHHELD_ASN else ""
    # Not validated again: an override that is no ASN fails each measurement (counted as errors), as it did.
    return found.model_copy(update={"probe_asn": asn, "probe_cc": cc, "probe_network_name": name})


async def first_address(bases: list[str]) -> str | None:
    """The collector's address, to find the local route toward it (resolved once per pass)."""
    for base in bases:
        host = urlsplit(base).hostname
        if not host:
            continue
        try:  # an address already (labs): no resolver thread to start, which costs memory (issue 4)
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=0)
        except OSError:
            continue
        if infos:
            return str(infos[0][4][0])
    return None


async def own_identity(
    network: NetworkView, probe_ip: str | None, options: RunOptions, dns: DNSConfig
) -> Identity:
    """What to scrub: the address the collector saw (``probe_ip``), the machine's own addresses and their
    reverse-DNS names, and the LAN's addresses (gateways, the machine's private ones)."""
    # The machine's own addresses of both families: on a dual-stack network the probes may leave by
    # IPv6 while the collector was reached by IPv4 (or the other way round). A bound lab agent leaves
    # from its source address only.
    learned = [] if options.source_address else machine_addresses(options.route_probes)
    if network.local_address:
        learned.append(network.local_address)
    own, lan = classify_own_addresses(learned)
    if probe_ip:
        own.append(probe_ip)
    # IPv6 addresses are scrubbed by their /64 (Identity.of): privacy addresses rotate inside it.
    return Identity.of(
        own_addresses=own,
        own_names=await _own_names(own, options.routable, dns),
        lan_addresses=[*network.gateways, *lan],
    )


async def _own_names(own: list[str], routable: tuple[str, ...], dns: DNSConfig) -> list[str]:
    """The reverse-DNS names of our public addresses: a site may echo "customer-4711.isp.example"
    instead of the address, and a name that does not spell the address out is found no other way.
    Asked of the resolver the pass measures with (which sees this machine's address anyway)."""
    from gatewatch.probes.dns import reverse_names

    public = [a for a in dict.fromkeys(own) if not is_bogon(a, routable)][:4]
    found = await asyncio.gather(*(reverse_names(a, dns) for a in public))
    return [name for names in found for name in names]

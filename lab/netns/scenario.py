"""What the namespace lab's censors do, to which site, where, and what a measurement should conclude.

The ground truth, stated once: per site its technique, the censor that applies it (the national gateway
for every ISP, or one ISP's own resolver), the expected web_connectivity ``blocking`` in each volunteer
network, and the expected attribution scope. Each injected packet's signature is stated here too, so a
test can compare what a probe recorded with what the censor forged, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BLOCKPAGE_BODY",
    "DNS_INJECTED_ADDRESS",
    "NETNS_SITES",
    "PacketSignature",
    "SIGNATURES",
    "Site",
    "VOLUNTEER_NETWORKS",
    "site",
]

# Volunteer network -> (the volunteer's namespace role, the ISP router holding its resolver, its ASN).
VOLUNTEER_NETWORKS: dict[str, tuple[str, str, str]] = {
    "isp-a": ("vol-a", "isp-a-core", "AS64601"),
    "isp-b": ("vol-b", "isp-b", "AS64602"),
}

# The forged DNS answer: a private address, so the probe records it and never connects to it.
DNS_INJECTED_ADDRESS = "10.10.34.36"
BLOCKPAGE_BODY = (
    b"<html><head><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>This site is blocked by order.</p></body></html>"
)


@dataclass(frozen=True)
class PacketSignature:
    """The header fields the gateway's injector sets on every packet of one technique."""

    ip_id: int
    ttl: int  # the initial TTL, as the injector sends it
    df: bool
    window: int | None = None  # TCP only


SIGNATURES: dict[str, PacketSignature] = {
    "dns_injection": PacketSignature(ip_id=0x1D1D, ttl=59, df=False),
    "tls_reset": PacketSignature(ip_id=0x2E2E, ttl=61, df=True, window=4321),
    "http_blockpage": PacketSignature(ip_id=0x3F3F, ttl=62, df=True, window=8192),
}


@dataclass(frozen=True)
class Site:
    name: str
    scheme: str  # http | https
    technique: str | None  # a key of SIGNATURES, "ip_blackhole", "resolver_nxdomain", or None (clean)
    censor: str  # "gateway" | an ISP network name | "none"
    blocking: str | bool  # expected blocking where censored
    blackholed: bool = False  # served on the blackholed address

    @property
    def scope(self) -> str:
        return "none" if self.censor == "none" else "gateway" if self.censor == "gateway" else "isp"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.name}/"

    def expected_blocking(self, network: str) -> str | bool:
        if self.censor == "gateway" or self.censor == network:
            return self.blocking
        return False


NETNS_SITES: tuple[Site, ...] = (
    Site("clean.netlab", "http", None, "none", False),
    Site("secure.netlab", "https", None, "none", False),
    Site("injected.netlab", "http", "dns_injection", "gateway", "dns"),
    Site("sni-reset.netlab", "https", "tls_reset", "gateway", "http-failure"),
    Site("blockpage.netlab", "http", "http_blockpage", "gateway", "http-diff"),
    Site("blackholed.netlab", "http", "ip_blackhole", "gateway", "tcp_ip", blackholed=True),
    Site("isp-blocked.netlab", "http", "resolver_nxdomain", "isp-b", "dns"),
)


def site(name: str) -> Site:
    return next(entry for entry in NETNS_SITES if entry.name == name)

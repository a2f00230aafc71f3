"""``Lab``: the emulated censored network, started from a scenario and torn down cleanly.

    async with await Lab.start() as lab:          # or: async with Lab() as lab
        config = lab.web_config("isp-a")            # what an unmodified probe needs to run inside it
        url = lab.url("blockpage.lab")              # http://blockpage.lab:PORT/
        lab.expected(url, "isp-a")                  # "http-diff"

Everything listens on 127.0.0.0/8 with kernel-chosen ports; nothing needs root.

A real test list runs through a lab with ``wildcard`` on (``Lab(wildcard=True)`` or ``wildcard = true`` in
the scenario): every unlisted name is a clean site. Real URLs carry no port, but the lab's ports are
unprivileged ones chosen at start, so such a URL is rewritten to the lab's port for its scheme first:
``lab.rewrite_url("https://example.org/a")`` -> ``https://example.org:PORT/a``.
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from gatewatch.probes.config import DNSConfig, HTTPConfig, TCPConfig, TLSConfig, WebConfig

from .certs import issue_lab_pki
from .listeners import bind_udp_tcp_pair
from .networks import CLEAN, HOSTING, NETWORKS, RESOLVER_ADDRESS, RESOLVER_RANGE, LabNetwork, server_address
from .resolver import LabResolver
from .scenario import Scenario, load_scenario
from .sites import LabSites
from .wildcard import WILDCARD_SITES, is_wildcard_name, wildcard_address

__all__ = ["Lab"]

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class Lab:
    """The lab's resolver and web servers for one scenario. Use ``await Lab.start()`` or ``async with``."""

    def __init__(
        self,
        scenario: Scenario | str | Path = "default",
        *,
        latency_ms: float | None = None,
        wildcard: bool | None = None,
    ) -> None:
        """``latency_ms`` and ``wildcard`` override the scenario's own settings (None keeps them)."""
        self.scenario: Scenario = load_scenario(scenario).with_settings(
            latency_ms=latency_ms, wildcard=wildcard
        )
        self.networks: dict[str, LabNetwork] = dict(NETWORKS)
        self.ca_file = ""
        self.resolver = ""
        self.dns_port = 0
        self.http_port = 0
        self.https_port = 0
        # "bpf": blackholes drop the scenario's networks only; "accept-queue": the kernel refused socket
        # filters and blackholes drop every client (see blackhole.py); None: no blackhole in the scenario.
        self.blackhole_mode: str | None = None
        existing = [d.name for d in self.scenario.domains if d.exists]
        self._server_addresses = {name: server_address(i) for i, name in enumerate(existing)}
        # The clean sites every unlisted name lives on, after the scenario's own servers.
        self.wildcard_addresses: tuple[str, ...] = (
            tuple(server_address(len(existing) + i) for i in range(WILDCARD_SITES))
            if self.scenario.wildcard
            else ()
        )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._resolver: LabResolver | None = None
        self._sites: LabSites | None = None
        self._started = False

    @classmethod
    async def start(
        cls,
        scenario: Scenario | str | Path = "default",
        *,
        latency_ms: float | None = None,
        wildcard: bool | None = None,
    ) -> Lab:
        lab = cls(scenario, latency_ms=latency_ms, wildcard=wildcard)
        await lab._start()
        return lab

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="gatewatch-lab-")
            pki = issue_lab_pki(self._server_addresses, Path(self._tmp.name))
            self.ca_file = pki.ca_file
            self.dns_port, udp, tcp = bind_udp_tcp_pair(RESOLVER_ADDRESS)
            self._resolver = LabResolver(
                self.scenario, self._server_addresses, udp, tcp, wildcard_addresses=self.wildcard_addresses
            )
            await self._resolver.start()
            self.resolver = f"{RESOLVER_ADDRESS}:{self.dns_port}"
            self._sites = LabSites(
                self.scenario, self._server_addresses, pki, wildcard_addresses=self.wildcard_addresses
            )
            await self._sites.start()
            self.http_port, self.https_port = self._sites.http_port, self._sites.https_port
            self.blackhole_mode = self._sites.blackhole_mode
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every server and remove the temporary files; safe to call twice."""
        sites, self._sites = self._sites, None
        resolver, self._resolver = self._resolver, None
        if sites is not None:
            await sites.close()
        if resolver is not None:
            await resolver.close()
        # Transports close their sockets on the next loop iterations: let them, so close() returning
        # means every descriptor is gone.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> Lab:
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Lab scenario={self.scenario.name!r} resolver={self.resolver!r} http={self.http_port}>"

    @property
    def latency(self) -> float:
        """Seconds every lab server waits before answering (the emulated round trip)."""
        return self.scenario.latency

    # --- what the probes and the tests need to know ---------------------------------------------------

    def urls(self) -> list[str]:
        """One URL per scenario domain and scheme, in scenario order, with the lab's port."""
        return [self.url(d.name, scheme) for d in self.scenario.domains for scheme in d.schemes]

    def url(self, domain: str, scheme: str | None = None) -> str:
        """The domain's URL (of ``scheme``, by default the domain's first) with the lab's port."""
        spec = self.scenario.domain(domain)
        scheme = scheme or spec.scheme
        if scheme not in spec.schemes:
            raise KeyError(f"{domain!r} is not measured over {scheme!r} in scenario {self.scenario.name!r}")
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://{spec.name}:{port}/"

    def switch(self, domain: str, on: bool) -> None:
        """Turn the censor of ``domain`` on or off while the lab runs (its DNS, TLS and HTTP behaviours act
        on the next query or connection). ``blackhole`` is fixed when the lab starts: a ValueError."""
        spec = self.scenario.domain(domain)
        if "blackhole" in spec.behaviours:
            raise ValueError(f"{domain!r}: blackhole is set up when the lab starts; it cannot be switched")
        spec.switch.on = on

    def rewrite_url(self, url: str) -> str:
        """A real URL pointed at the lab: its port replaced by the lab's for its scheme.

        An IP literal outside 127.0.0.0/8 (a list's ``https://1.1.1.1/``) becomes the wildcard site that
        address maps to, so that no rewritten URL can send a packet off the machine; without wildcard
        sites that is a ``ValueError``, as is a URL that is not http(s) or has no host.
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        host = parts.hostname
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip not in _LOOPBACK:
            if not self.wildcard_addresses:
                raise ValueError(f"{url!r} names an address outside the lab (start the lab with wildcard)")
            host = wildcard_address(str(ip), self.wildcard_addresses)
        netloc = f"[{host}]" if ":" in host else host
        port = self.https_port if scheme == "https" else self.http_port
        return urlunsplit((scheme, f"{netloc}:{port}", parts.path, parts.query, parts.fragment))

    def issue_certificates(self, names: Iterable[str]) -> int:
        """Issue now the certificates of wildcard sites that will be asked for (a benchmark's list), as a
        real site has its certificate before anyone connects; how many were issued. Without this, each
        is issued inside its first handshake, on the lab's CPU, while the measurement is being timed.
        At most ``MAX_ISSUED_CONTEXTS`` are kept."""
        if self._sites is None:
            raise RuntimeError("the lab is not started")
        return self._sites.issue_certificates(names)

    def server_address(self, domain: str) -> str | None:
        """The address ``domain`` really resolves to (None for a domain that does not exist).

        With wildcard on, an unlisted hostname has the wildcard site's address; without, it is a KeyError.
        """
        if self._is_wildcard(domain):
            return wildcard_address(domain, self.wildcard_addresses)
        return self._server_addresses.get(self.scenario.domain(domain).name)

    def expected(self, url_or_domain: str, network: str) -> object:
        """The web_connectivity ``blocking`` value the scenario expects for this URL from ``network``."""
        if network not in self.networks:
            raise KeyError(f"unknown lab network {network!r} (known: {list(self.networks)})")
        parts = urlsplit(url_or_domain) if "://" in url_or_domain else None
        host = parts.hostname if parts is not None else url_or_domain
        if self._is_wildcard(host or "") or host in self.wildcard_addresses:
            return False  # wildcard sites are clean for everyone, by name or by address
        return self.scenario.domain(host or "").expected(network, parts.scheme if parts else None)

    def _is_wildcard(self, name: str) -> bool:
        return bool(self.wildcard_addresses) and name not in self.scenario and is_wildcard_name(name)

    def web_config(self, network: str = "isp-a") -> WebConfig:
        """Probe settings for a client inside ``network``: the lab resolver, CA and source address."""
        if network not in self.networks:
            raise KeyError(f"unknown lab network {network!r} (known: {list(self.networks)})")
        source = self.networks[network].source_address
        return WebConfig(
            dns=DNSConfig(
                resolver=self.resolver,
                source_address=source,
                routable=("127.0.0.0/8",),
                timeout=2.0,
                linger=0.1,
            ),
            tcp=TCPConfig(source_address=source, timeout=1.0),
            tls=TLSConfig(ca_file=self.ca_file, timeout=2.0),
            http=HTTPConfig(timeout=3.0),
        )

    def control_config(self) -> WebConfig:
        """Probe settings for the uncensored vantage (what a control server would use)."""
        return self.web_config(CLEAN)

    def write_asn_csv(self, path: str | os.PathLike[str]) -> None:
        """ip-location-db ASN CSV (no header): start,end,asn,organisation, covering every lab range."""
        self._write_ranges(path, lambda n: [str(n.asn), n.network_name])

    def write_country_csv(self, path: str | os.PathLike[str]) -> None:
        """ip-location-db country CSV (no header): start,end,country_code."""
        self._write_ranges(path, lambda n: [n.cc])

    def _write_ranges(self, path: str | os.PathLike[str], columns: Callable[[LabNetwork], list[str]]) -> None:
        resolver_row = HOSTING._replace(name="resolver", cidr=RESOLVER_RANGE)
        rows = []
        for network in [*self.networks.values(), HOSTING, resolver_row]:
            net = ipaddress.IPv4Network(network.cidr)
            rows.append(
                (int(net.network_address), str(net.network_address), str(net.broadcast_address), network)
            )
        rows.sort()
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            for _, start, end, network in rows:
                writer.writerow([start, end, *columns(network)])

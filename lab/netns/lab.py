"""``NetnsLab``: the namespace network, its servers, the ISP resolvers and the gateway's censor, started.

    with NetnsLab.start(workdir) as lab:
        subprocess.run(lab.exec_args("vol-a", "gatewatch-agent", "run", ...))

Everything it starts runs inside the namespaces it made, and ``close()`` (also on a failed start) ends
those processes by their pids and removes the namespaces. Each wait is bounded.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..certs import issue_lab_pki
from .build import NetnsNetwork
from .censor import CensorConfig
from .scenario import NETNS_SITES, VOLUNTEER_NETWORKS, Site
from .services import ServiceConfig
from .topology import INTL_BLACKHOLED, INTL_DNS, INTL_WEB

__all__ = ["NetnsLab"]

READY_TIMEOUT = 15.0


class NetnsLab:
    def __init__(self, workdir: Path, sites: Sequence[Site] = NETNS_SITES) -> None:
        self.workdir = workdir
        self.sites = tuple(sites)
        self.network = NetnsNetwork()
        self.processes: list[subprocess.Popen[str]] = []
        self.ca_file = ""

    @classmethod
    def start(cls, workdir: Path, sites: Sequence[Site] = NETNS_SITES) -> NetnsLab:
        lab = cls(workdir, sites)
        try:
            lab._start()
        except BaseException:
            lab.close()
            raise
        return lab

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def namespace(self, role: str) -> str:
        return self.network.namespace(role)

    def exec_args(self, role: str, *args: str) -> list[str]:
        return self.network.exec_args(role, *args)

    def address(self, role: str) -> str:
        return self.network.topology.address(role)

    def resolver_address(self, network: str) -> str:
        """The address the volunteers of ``network`` reach their ISP's resolver at."""
        volunteer, router, _ = VOLUNTEER_NETWORKS[network]
        path = self.network.topology.path_to_root(volunteer)
        below = path[path.index(router) - 1]
        return self.network.topology.link_to_parent(below).upper_address

    def gateway_hop(self, network: str) -> int:
        """The gateway's position on the path from ``network``'s volunteer (1 = its first router)."""
        return self.network.topology.hops_to(VOLUNTEER_NETWORKS[network][0], "gateway")

    def _start(self) -> None:
        self.network.build()
        topology = self.network.topology
        records = {site.name: INTL_BLACKHOLED if site.blackholed else INTL_WEB for site in self.sites}
        (self.workdir / "pki").mkdir(parents=True, exist_ok=True)
        pki = issue_lab_pki(sorted(records), self.workdir / "pki")
        self.ca_file = pki.ca_file
        certificates = {name: list(files) for name, files in pki.server_files.items()}
        self._spawn(
            "intl", "services", ServiceConfig("intl", INTL_DNS, records, certificates=certificates).to_json()
        )
        for network, (volunteer, router, _) in VOLUNTEER_NETWORKS.items():
            blocked = tuple(
                s.name for s in self.sites if s.censor == network and s.technique == "resolver_nxdomain"
            )
            config = ServiceConfig("resolver", "0.0.0.0", {}, upstream=INTL_DNS, blocked=blocked)
            self._spawn(router, "services", config.to_json())
            self.network.set_resolver(volunteer, self.resolver_address(network))
        gateway_sites = [s for s in self.sites if s.censor == "gateway"]
        censor = CensorConfig(
            interfaces=tuple(
                self.network.downlink("gateway", c) for c in topology.children("gateway") if c != "intl"
            ),
            dns_names=tuple(s.name for s in gateway_sites if s.technique == "dns_injection"),
            sni_names=tuple(s.name for s in gateway_sites if s.technique == "tls_reset"),
            host_names=tuple(s.name for s in gateway_sites if s.technique == "http_blockpage"),
        )
        if any(s.technique == "ip_blackhole" for s in gateway_sites):
            self.network.run_in("gateway", "iptables", "-A", "FORWARD", "-d", INTL_BLACKHOLED, "-j", "DROP")
        self._spawn("gateway", "censor", censor.to_json())

    def _spawn(self, role: str, module: str, config: str) -> None:
        path = self.workdir / f"{module}-{role}.json"
        path.write_text(config, encoding="utf-8")
        args = self.exec_args(role, sys.executable, "-m", f"gatewatch.lab.netns.{module}", str(path))
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 0.2)[0]:
                if process.stdout.readline().strip() == "ready":
                    return
            if process.poll() is not None:
                break
        raise RuntimeError(
            f"{module} in {role} did not start: "
            + (process.stderr.read() if process.poll() is not None else "no 'ready' line in time")
        )

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            try:
                process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()
        self.network.close()

"""Build and tear down the namespace lab with ``ip`` and ``iptables`` (root only).

Every namespace is named ``gwn-<pid>-<role>`` after the process that made it, so a run that crashed
leaves names a later run recognises and removes (its pid is gone) without touching a lab that another
live process is using. Veth pairs are created directly inside their two namespaces, so nothing is ever
added to the host's own network. Each command has a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .topology import DEFAULT_TOPOLOGY, Topology

__all__ = ["NAMESPACE_PREFIX", "NetnsError", "NetnsNetwork", "missing_requirements", "remove_leftovers"]

NAMESPACE_PREFIX = "gwn-"
COMMAND_TIMEOUT = 10.0
UPLINK = "uplink"  # every namespace but the gateway reaches its parent through this interface
NETNS_ETC = Path(
    "/etc/netns"
)  # `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf


class NetnsError(RuntimeError):
    pass


def missing_requirements() -> str | None:
    """Why the namespace lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, iptables)"
    for tool in ("ip", "iptables", "sysctl"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command"
    try:
        import scapy  # noqa: F401
    except ImportError:
        return "needs scapy (pip install 'gatewatch[netns]')"
    probe = f"{NAMESPACE_PREFIX}{os.getpid()}-check"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    return None


def run(args: Sequence[str]) -> str:
    done = subprocess.run(list(args), capture_output=True, timeout=COMMAND_TIMEOUT, text=True)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _left_over(name: str) -> bool:
    """Whether ``name`` is a namespace lab's whose creating process has ended (a tag starts with its pid)."""
    owner = re.match(r"(\d+)", name[len(NAMESPACE_PREFIX) :]) if name.startswith(NAMESPACE_PREFIX) else None
    return owner is not None and not Path(f"/proc/{owner.group(1)}").exists()


def remove_leftovers() -> list[str]:
    """Remove namespace labs whose creating process is gone; return their names."""
    removed = []
    for name in _namespaces():
        if _left_over(name):
            _delete_namespace(name)
            removed.append(name)
    return removed


def _delete_namespace(name: str) -> None:
    # Only processes inside a namespace this lab made are ended, each by its pid.
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    for pid in pids.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=COMMAND_TIMEOUT)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


@dataclass
class NetnsNetwork:
    """The namespaces, links and routes of a ``Topology``, made real; ``close()`` removes everything."""

    topology: Topology = DEFAULT_TOPOLOGY
    tag: str = field(default_factory=lambda: str(os.getpid()))  # starts with the pid of the owning process
    created: list[str] = field(default_factory=list)

    def namespace(self, role: str) -> str:
        return f"{NAMESPACE_PREFIX}{self.tag}-{role}"

    def exec_args(self, role: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(role), *args]

    def run_in(self, role: str, *args: str) -> str:
        return run(self.exec_args(role, *args))

    def build(self) -> None:
        remove_leftovers()
        try:
            for node in self.topology.nodes:
                self._add_node(node.name, node.router, node.extra_addresses)
            for link in self.topology.links:
                self._add_link(link.upper, link.lower, link.subnet)
            for route in self.topology.routes():
                run(
                    [
                        "ip",
                        "-n",
                        self.namespace(route.node),
                        "route",
                        "add",
                        route.destination,
                        "via",
                        route.via,
                    ]
                )
        except BaseException:
            self.close()
            raise

    def _add_node(self, role: str, router: bool, extra: tuple[str, ...]) -> None:
        name = self.namespace(role)
        run(["ip", "netns", "add", name])
        self.created.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        for address in extra:
            run(["ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo"])
        settings = ["net.ipv4.icmp_ratelimit=0"]  # every TTL-limited probe gets its time-exceeded answer
        if router:
            settings.append("net.ipv4.ip_forward=1")
        self.run_in(role, "sysctl", "-qw", *settings)

    def _add_link(self, upper: str, lower: str, subnet: str) -> None:
        up, down = self.namespace(upper), self.namespace(lower)
        prefix = subnet.rsplit(".", 1)[0]
        down_if = f"d-{lower}"[:15]
        run(
            ["ip", "link", "add", down_if, "netns", up, "type", "veth", "peer", "name", UPLINK, "netns", down]
        )
        run(["ip", "-n", up, "addr", "add", f"{prefix}.1/24", "dev", down_if])
        run(["ip", "-n", down, "addr", "add", f"{prefix}.2/24", "dev", UPLINK])
        run(["ip", "-n", up, "link", "set", "dev", down_if, "up"])
        run(["ip", "-n", down, "link", "set", "dev", UPLINK, "up"])

    def downlink(self, upper: str, lower: str) -> str:
        """The interface name in ``upper``'s namespace that faces ``lower``."""
        del upper
        return f"d-{lower}"[:15]

    def set_resolver(self, role: str, address: str) -> None:
        """The resolver programs run by ``exec_args(role, ...)`` find in /etc/resolv.conf."""
        directory = NETNS_ETC / self.namespace(role)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(f"nameserver {address}\n", encoding="ascii")

    def close(self) -> None:
        for name in reversed(self.created):
            _delete_namespace(name)
        self.created.clear()

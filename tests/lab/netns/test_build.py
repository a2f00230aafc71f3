"""The namespace lab cleans up after itself, also after a crash, and never touches a live run (root only)."""

from __future__ import annotations

import os
import subprocess

import pytest

from gatewatch.lab.netns.build import (
    NAMESPACE_PREFIX,
    NETNS_ETC,
    NetnsNetwork,
    missing_requirements,
    remove_leftovers,
)

pytestmark = [pytest.mark.netns]


@pytest.fixture(autouse=True)
def _root() -> None:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(f"namespace lab: {reason}")


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def _dead_pid() -> int:
    # A pid that existed and has ended: a child that exits at once.
    child = subprocess.Popen(["true"])
    child.wait(timeout=10)
    return child.pid


def test_a_crashed_runs_namespaces_are_removed_and_a_live_runs_kept() -> None:
    crashed = f"{NAMESPACE_PREFIX}{_dead_pid()}-gateway"
    live = f"{NAMESPACE_PREFIX}{os.getpid()}-leftover-check"
    for name in (crashed, live):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        removed = remove_leftovers()
        assert crashed in removed and crashed not in _namespaces()
        assert live in _namespaces()
    finally:
        for name in (crashed, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_close_removes_every_namespace_and_resolver_file_even_after_a_failed_build() -> None:
    network = NetnsNetwork(tag=f"{os.getpid()}x")
    network.build()
    network.set_resolver("vol-a", "10.77.11.1")
    made = set(network.created)
    assert made <= _namespaces() and len(made) == len(network.topology.nodes)
    network.close()
    assert not made & _namespaces()
    assert not any(path.name in made for path in NETNS_ETC.glob("*"))
    # A build that fails half way removes what it made.
    broken = NetnsNetwork(tag=f"{os.getpid()}y")
    subprocess.run(["ip", "netns", "add", broken.namespace("intl")], check=True, timeout=10)  # a name clash
    try:
        with pytest.raises(Exception, match="intl"):
            broken.build()
        assert broken.namespace("gateway") not in _namespaces()
    finally:
        broken.close()
        subprocess.run(["ip", "netns", "del", broken.namespace("intl")], capture_output=True, timeout=10)

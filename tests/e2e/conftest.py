"""End-to-end fixtures: one lab, one real collector and one agent pass per censored network, shared by
the session's end-to-end tests (starting them is most of the cost).

The lab runs in this process on its own event loop (harness.LabThread); the collector and the agents are
the installed command-line programs in subprocesses, configured as an operator and a volunteer would be,
with the lab's resolver, CA and source addresses. Everything is on 127.0.0.0/8.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab.lab import Lab

from .harness import AgentRun, CollectorProcess, LabThread, finish_agent, init_agent, start_agent

CENSORED = ("isp-a", "isp-b")


def whoami_url(lab: Lab) -> str:
    """The lab resolver answers whoami.<echo domain> with the address that asked."""
    return f"http://whoami.echo.lab:{lab.http_port}/"


@dataclass(frozen=True)
class NetworkPass:
    """One agent's pass from one lab network, and what its queue holds afterwards."""

    network: str
    data_dir: Path
    inputs: tuple[str, ...]
    run: AgentRun
    uids: dict[str, str]  # input URL -> measurement_uid, as queued by the agent

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.sqlite3"


def queued_uids(data_dir: Path) -> dict[str, str]:
    """input -> measurement_uid for every row of an agent's queue (its process has exited)."""
    with MeasurementQueue(data_dir / "queue.sqlite3") as queue:
        rows = queue.recent(10_000)
    return {str(row.measurement()["input"]): row.measurement_uid for row in rows}


@pytest.fixture(scope="session")
def lab_thread() -> Iterator[LabThread]:
    runner = LabThread()
    try:
        runner.start()
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def lab(lab_thread: LabThread) -> Lab:
    assert lab_thread.lab is not None
    return lab_thread.lab


@pytest.fixture(scope="session")
def collector(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("collector"), lab)
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def passes(
    lab: Lab, collector: CollectorProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, NetworkPass]:
    """An agent in each censored network measures every scenario URL (and the whoami name) once and
    uploads; the two run side by side, as two volunteers would."""
    inputs = (*lab.urls(), whoami_url(lab))
    started = {}
    for network in CENSORED:
        data_dir = tmp_path_factory.mktemp(f"agent-{network}")
        init_agent(data_dir)
        started[network] = (data_dir, start_agent(lab, network, data_dir, collector.url, inputs))
    done = {}
    for network, (data_dir, process) in started.items():
        run = finish_agent(process)
        assert run.returncode == 0, f"agent in {network} failed:\n{run.stdout}\n{run.stderr}"
        done[network] = NetworkPass(network, data_dir, inputs, run, queued_uids(data_dir))
    return done

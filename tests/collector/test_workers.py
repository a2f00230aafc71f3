"""``gatewatch-collector serve --workers N`` (collector/workers.py, workers_metrics.py): real processes on a
real PostgreSQL, everything on 127.0.0.1 and every wait bounded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gatewatch.collector.cli import cli
from gatewatch.collector.workers import MAX_WORKERS, WORKER_HEADER, WorkersError, check_workers
from gatewatch.lab.scripts import COLLECTOR, console_script

from .conftest import CONTROL_SECRET, PostgresCluster, create_database

START_TIMEOUT = 60.0
TRIES = 200  # requests made to see a second worker answer


def test_workers_bounds() -> None:
    check_workers("postgresql://x/db", MAX_WORKERS)
    for bad in (0, MAX_WORKERS + 1):
        with pytest.raises(WorkersError, match="between 1 and"):
            check_workers("postgresql://x/db", bad)


def test_sqlite_refused_with_several_workers(tmp_path: Path) -> None:
    check_workers(f"sqlite:///{tmp_path / 'a.db'}", 1)
    result = CliRunner().invoke(
        cli, ["serve", "--workers", "2", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path / 'a.db'}"]
    )
    assert result.exit_code == 2
    assert "one writer" in result.output
    assert not (tmp_path / "a.db").exists()  # refused before anything was opened


class Served:
    """The parent process of ``serve --workers N`` and its log."""

    def __init__(self, db: str, workers: int, log: Path) -> None:
        self.log = log
        env = os.environ | {
            "GATEWATCH_ACCEPT_IDENTIFIED": "true",
            "GATEWATCH_CONTROL_SIGNING_SECRET": CONTROL_SECRET,
            "GATEWATCH_SHUTDOWN_TIMEOUT": "5",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        command = [console_script(COLLECTOR), "serve", "--listen", "127.0.0.1:0", "--db", db]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "--workers", str(workers)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
            )
        self.port = self._port()

    def _port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            for entry in self.entries():
                if entry.get("msg") == "listening" and "workers" in entry:
                    return int(entry["port"])
            time.sleep(0.1)
        raise AssertionError(f"no listening line:\n{self.log.read_text(errors='replace')}")

    def entries(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def served(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[Served]:
    db = asyncio.run(create_database(pg_cluster))
    running = Served(db, 2, tmp_path / "collector.log")
    try:
        yield running
    finally:
        running.stop()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        await response.read()
        return response.status, response.headers.get(WORKER_HEADER, "")


async def _workers_answering(url: str, want: int, tries: int = TRIES) -> set[int]:
    """The worker pids that answered /readyz over up to ``tries`` new connections (stops at ``want``)."""
    seen: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)  # a connection per request: any worker may take it
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(tries):
            try:
                status, pid = await _get(session, url + "/readyz")
            except aiohttp.ClientError:
                status, pid = 0, ""
            if status == 200 and pid:
                seen.add(int(pid))
                if len(seen) >= want:
                    break
            await asyncio.sleep(0.05)
    return seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.postgres
def test_workers_share_the_socket_and_stop_on_sigterm(served: Served) -> None:
    pids = asyncio.run(_workers_answering(served.url, 2))
    assert len(pids) == 2, "two different workers answer on the one port"
    assert served.process.pid not in pids  # the parent only supervises
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    assert _wait(lambda: not any(_alive(pid) for pid in pids), 10)
    assert [e for e in served.entries() if e.get("msg") == "stopped"]


@pytest.mark.postgres
def test_a_killed_worker_is_replaced(served: Served) -> None:
    first = asyncio.run(_workers_answering(served.url, 2))
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert _wait(lambda: not _alive(victim), 10)
    now = asyncio.run(_workers_answering(served.url, 2, tries=600))
    assert len(now) == 2 and victim not in now and max(first) in now
    assert served.process.poll() is None
    assert [e for e in served.entries() if e.get("msg") == "worker exited: restarting"]


@pytest.mark.postgres
def test_workers_stop_when_the_parent_is_killed(served: Served) -> None:
    pids = asyncio.run(_workers_answering(served.url, 2))
    assert len(pids) == 2
    served.process.kill()
    served.process.wait(timeout=10)
    assert _wait(lambda: not any(_alive(pid) for pid in pids), 30)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.postgres
def test_metrics_add_up_across_workers(served: Served, sign: Any, make_measurement: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rounds = [
        [
            [sign(make_measurement(), key) for _ in range(5)]
            for key in (Ed25519PrivateKey.generate() for _ in range(6))
        ]
        for _ in range(10)
    ]
    sent: list[list[dict[str, Any]]] = []

    async def run() -> tuple[set[str], list[tuple[str, str]], int]:
        by: set[str] = set()
        scrapes: list[tuple[str, str]] = []
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(batch: list[dict[str, Any]]) -> None:
                url = served.url + "/api/v1/measurements"
                async with session.post(url, json={"measurements": batch}) as r:
                    body = await r.json()
                    assert r.status == 200, body
                    assert {item["status"] for item in body["results"]} == {"accepted"}
                    by.add(r.headers[WORKER_HEADER])

            # Six at once, round after round, until both workers have taken some (bounded).
            for batches in rounds:
                await asyncio.gather(*(post(batch) for batch in batches))
                sent.extend(batches)
                if len(by) == 2:
                    break
            total = sum(len(b) for b in sent)
            # The custom counters reach the other workers within a snapshot interval: scrape until every
            # answer adds up (bounded), keeping one scrape per worker.
            deadline = time.monotonic() + 20
            per_worker: dict[str, str] = {}
            while time.monotonic() < deadline and len(per_worker) < len(by):
                async with session.get(served.url + "/metrics") as r:
                    text = await r.text()
                    samples = _samples(text)
                    measured = sum(v for (n, _), v in samples.items() if n == "gatewatch_measurements_total")
                    if measured == total:
                        per_worker[r.headers[WORKER_HEADER]] = text
                await asyncio.sleep(0.1)
            scrapes = list(per_worker.items())
        return by, scrapes, total

    assert len(asyncio.run(_workers_answering(served.url, 2))) == 2  # both started
    workers, scrapes, total = asyncio.run(run())
    assert len(workers) == 2, "the uploads were spread over both workers (new connection each)"
    assert len(scrapes) == 2, "both workers' /metrics add up to every measurement"
    for _, text in scrapes:
        samples = _samples(text)
        accepted = (("reason", ""), ("result", "accepted"))
        assert samples[("gatewatch_ingest_items_total", accepted)] == total
        assert samples[("gatewatch_ingest_requests_total", (("result", "ok"),))] == len(sent)
        assert samples[("gatewatch_ingest_request_seconds_count", ())] == len(sent)
        last = [k for k in samples if k[0] == "gatewatch_ingest_last_accepted_timestamp_seconds"]
        assert last == [("gatewatch_ingest_last_accepted_timestamp_seconds", ())]  # one series, no pid
        assert samples[last[0]] > time.time() - 120


@pytest.mark.postgres
def test_the_parent_gives_up_when_workers_cannot_start(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    """Workers that die young again and again (no such database) are restarted with back-off, then the
    parent stops and exits 1, as one collector that cannot reach its store does."""
    log = tmp_path / "collector.log"
    missing = pg_cluster.url("no_such_database")
    command = [
        console_script(COLLECTOR),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        missing,
        "--workers",
        "2",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        assert process.wait(timeout=180) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    messages = [json.loads(line).get("msg") for line in log.read_text().splitlines() if line.startswith("{")]
    assert "workers keep failing to start: stopping" in messages
    assert messages.count("worker exited: restarting") >= 5

"""Ingest throughput of one and of two collector processes on one PostgreSQL, side by side, with where the
CPU went and the ceiling the machine allows.

    python bench/ingest_scale.py                          # 4,000 measurements per run, 3 pairs of runs
    python bench/ingest_scale.py --count 600 --repeat 1   # a quick try

A throwaway PostgreSQL cluster (initdb/pg_ctl, unix socket only, fsync on) is made in a temporary folder;
each run gets a fresh database. ``gatewatch-collector serve`` runs as its console script on 127.0.0.1
(port chosen by the system): one process, then ``serve --workers 2`` (two worker processes on one
listening socket). The same kind of pre-signed measurements (bench/ingest.py's page load, a fresh key per
batch) are uploaded, a new connection per upload as agents do (so the kernel hands each to whichever
worker accepts first), by a lean client: request bytes built beforehand, raw asyncio streams. The
one-process figure of each pair is the same-run baseline of the two-process one; the pairs alternate
which goes first, and the median and spread of the pairs' ratios are printed.

CPU accounting (from /proc, over each upload phase): the collector's processes, PostgreSQL's, this load
generator's, and what else the machine ran (other sessions share its cores). The ceilings: how many times
the one-process run's total CPU use (collector + PostgreSQL + client, in cores) fits in all the machine's
cores, and in the cores the other load measured during the pair left; and the idle-machine projection:
one process bound by its one thread (its CPU per measurement), two by their two threads or by all the
cores over everything's CPU per measurement in the two-process run (a projection from the CPU figures,
not a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
# bench/ingest.py's measurements, loaded by path (so that it works with python -P too).
_spec = importlib.util.spec_from_file_location("gatewatch_bench_ingest", HERE / "ingest.py")
assert _spec is not None and _spec.loader is not None
ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ingest)

WORKER_HEADER = b"gatewatch-worker"  # collector/workers.py's header, lower-cased as read below
TICK = os.sysconf("SC_CLK_TCK")


def _pg_binary(name: str) -> str:
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"skipped: PostgreSQL's {name} is not installed")
    return found


class Cluster:
    """A PostgreSQL cluster of our own on a unix socket; as ``nobody`` when run as root."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="gatewatch-bench-pg-"))
        self.sockets = self.base / "run"
        self.data = self.base / "data"
        self.user: dict[str, Any] = {"user": "nobody"} if os.geteuid() == 0 else {}

    def __enter__(self) -> Cluster:
        self.sockets.mkdir()
        if self.user:
            os.chmod(self.base, 0o755)
            for path in (self.base, self.sockets):
                shutil.chown(path, user="nobody")
        run: dict[str, Any] = dict(check=True, capture_output=True, timeout=120, **self.user)
        subprocess.run(
            [_pg_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            **run,
        )
        options = f"-c listen_addresses='' -k {self.sockets} -c max_connections=100"
        log = str(self.base / "log")
        command = [_pg_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"]
        subprocess.run(command, **run)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [_pg_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
            **self.user,
        )
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}"

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    async def new_database(self) -> str:
        name = "bench_" + uuid.uuid4().hex[:10]
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


# --- CPU from /proc -----------------------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (bounded: a few hundred processes at most)."""
    found, todo = [], [pid]
    while todo and len(found) < 500:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each process still there."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (every core)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / TICK


@dataclass(frozen=True)
class Run:
    processes: int
    count: int
    wall: float
    collector_cpu: float
    postgres_cpu: float
    client_cpu: float
    machine_cpu: float
    by_worker: dict[str, int]

    @property
    def rate(self) -> float:
        return self.count / self.wall

    @property
    def ours(self) -> float:
        return self.collector_cpu + self.postgres_cpu + self.client_cpu

    @property
    def others_cores(self) -> float:
        return max(self.machine_cpu - self.ours, 0.0) / self.wall


# --- the collector ------------------------------------------------------------------------------------------
def _collector_script() -> str:
    beside = Path(sys.executable).with_name("gatewatch-collector")
    return str(beside) if beside.is_file() else (shutil.which("gatewatch-collector") or str(beside))


def start_collector(db: str, log: Path, processes: int) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        **os.environ,
        "GATEWATCH_KEY_RATE": "1000",
        "GATEWATCH_ACCEPT_IDENTIFIED": "true",  # identified batches: the tokens are bench/batch_verify.py's
        "GATEWATCH_CONTROL_SIGNING_SECRET": ingest.CONTROL_SECRET,
        "GATEWATCH_KEY_BURST": "1000000",
        "GATEWATCH_LOG_LEVEL": "WARNING",
    }
    command = [_collector_script(), "serve", "--listen", "127.0.0.1:0", "--db", db, "--log-level", "INFO"]
    if processes > 1:
        command += ["--workers", str(processes)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the collector exited:\n{log.read_text(errors='replace')[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "listening" and (processes == 1 or "workers" in entry):
                port = int(entry["port"])
                if len(_ready_workers(port, processes)) >= processes:
                    return process, port
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the collector did not start within 90 s")


def _ready_workers(port: int, want: int) -> set[str]:
    seen: set[str] = set()
    for _ in range(40 * want):  # bounded: new connections until each worker has answered
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    seen.add(answer.headers.get("Gatewatch-Worker", "single"))
        except OSError:
            return seen
        if len(seen) >= want:
            break
        time.sleep(0.02)
    return seen


# --- the load generator -------------------------------------------------------------------------------------
def requests_of(batches: list[list[dict[str, Any]]]) -> list[bytes]:
    """Each upload's whole request, built before the clock starts."""
    built = []
    for batch in batches:
        body = json.dumps({"measurements": batch}).encode()
        head = (
            "POST /api/v1/measurements HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        built.append(head.encode() + body)
    return built


async def upload(requests: list[bytes], sizes: list[int], port: int, concurrency: int) -> dict[str, int]:
    """Every request on its own connection, ``concurrency`` at a time; measurements stored per worker."""
    queue = list(range(len(requests)))
    queue.reverse()
    by_worker: dict[str, int] = {}

    async def sender() -> None:
        while queue:
            index = queue.pop()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(requests[index])
                answer = await asyncio.wait_for(reader.read(), 120)
            finally:
                writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200") or body.count(b'"accepted"') != sizes[index]:
                raise SystemExit(f"unexpected answer: {answer[:300]!r}")
            worker = "single"
            for line in head.lower().split(b"\r\n"):
                if line.startswith(WORKER_HEADER + b":"):
                    worker = line.split(b":", 1)[1].strip().decode()
            by_worker[worker] = by_worker.get(worker, 0) + sizes[index]

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return by_worker


def run(cluster: Cluster, processes: int, count: int, concurrency: int) -> Run:
    batches = ingest.signed_batches(count)
    requests, sizes = requests_of(batches), [len(b) for b in batches]
    db = asyncio.run(cluster.new_database())
    process, port = start_collector(
        db, cluster.base / f"collector-{processes}-{time.monotonic_ns()}.log", processes
    )
    try:
        roots = (process.pid, cluster.postmaster())
        before = (*(_cpu(_tree(root)) for root in roots), time.process_time(), _machine_busy())
        started = time.perf_counter()
        by_worker = asyncio.run(upload(requests, sizes, port, concurrency))
        wall = time.perf_counter() - started
        # Processes started during the upload (PostgreSQL's new connections) count from 0; none ends in it.
        after = (*(_cpu(_tree(root)) for root in roots), time.process_time(), _machine_busy())
    finally:
        process.terminate()
        process.wait(timeout=60)

    def spent(i: int) -> float:
        return sum(after[i][pid] - before[i].get(pid, 0.0) for pid in after[i])

    return Run(
        processes, count, wall, spent(0), spent(1), after[2] - before[2], after[3] - before[3], by_worker
    )


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def _describe(r: Run) -> str:
    per = 1e6 / r.count
    shares = "/".join(str(n) for n in sorted(r.by_worker.values(), reverse=True))
    return (
        f"{r.processes} process{'es' if r.processes > 1 else ''}: {r.rate:8.0f} measurements/s;"
        f" CPU µs/measurement collector {r.collector_cpu * per:5.0f}, PostgreSQL {r.postgres_cpu * per:4.0f},"
        f" client {r.client_cpu * per:4.0f}; cores busy: ours {r.ours / r.wall:.2f},"
        f" others {r.others_cores:.2f}; per worker {shares}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="measurements per run")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight at once")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs (one process, two)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    pairs: list[tuple[Run, Run]] = []
    with Cluster() as cluster:
        for index in range(args.repeat):
            order = (1, 2) if index % 2 == 0 else (2, 1)  # alternate: drift in the machine's load cancels
            done = {n: run(cluster, n, args.count, args.concurrency) for n in order}
            pairs.append((done[1], done[2]))
            for n in order:
                print(f"pair {index + 1}, {_describe(done[n])}")
    ratios = [two.rate / one.rate for one, two in pairs]
    ceilings = [cores / (one.ours / one.wall) for one, _ in pairs]
    free = [
        max(cores - (one.others_cores + two.others_cores) / 2, 0.1) / (one.ours / one.wall)
        for one, two in pairs
    ]
    # If nothing else ran: one process is bound by its one thread (its collector CPU per measurement), two
    # by their two threads or by the cores over everything's CPU per measurement (collectors, PostgreSQL,
    # client), whichever is lower; CPU per measurement as each run measured it.
    projected = [
        min(2 * one.collector_cpu / two.collector_cpu, cores * one.collector_cpu / two.ours)
        for one, two in pairs
    ]
    print(
        f"measurements: {args.count} per run, batches of {ingest.BATCH}, {args.concurrency} uploads in"
        f" flight, a connection each; PostgreSQL fsync on; {cores} logical cores shared by the collectors,"
        " PostgreSQL, this client and whatever else runs"
    )
    print(f"one collector process:    {statistics.median(one.rate for one, _ in pairs):10.0f} measurements/s")
    print(f"two collector processes:  {statistics.median(two.rate for _, two in pairs):10.0f} measurements/s")
    print(f"two / one:                {_spread(ratios)}")
    print(f"CPU ceiling, all {cores} cores:  {_spread(ceilings)}")
    print(f"CPU ceiling, cores others left: {_spread(free)}")
    print(f"idle-machine projection:   {_spread(projected)}")


if __name__ == "__main__":
    main()

"""Ingest throughput of one and of two collector processes on one PostgreSQL, side by side.

    python bench/ingest_scale.py                  # 4,000 measurements per run, 4 uploads in flight
    python bench/ingest_scale.py --count 600      # a quick try

A throwaway PostgreSQL cluster (initdb/pg_ctl, unix socket only, fsync on) is made in a temporary folder;
each run gets a fresh database. ``gatewatch-collector serve`` runs as its console script on 127.0.0.1
(port chosen by the system), one process, then two, and the same pre-signed measurements
(bench/ingest.py's page load) are uploaded round-robin to the processes. The one-process figure is the
same-run baseline of the two-process one. On a machine with fewer free cores than processes (collectors
and PostgreSQL compete for them) the ratio says so; docs/scaling.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

HERE = Path(__file__).resolve().parent
# bench/ingest.py's measurements, loaded by path (so that it works with python -P too).
_spec = importlib.util.spec_from_file_location("gatewatch_bench_ingest", HERE / "ingest.py")
assert _spec is not None and _spec.loader is not None
ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ingest)


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
        self.user: dict[str, Any] = {"user": "nobody"} if os.geteuid() == 0 else {}

    def __enter__(self) -> Cluster:
        self.sockets.mkdir()
        if self.user:
            os.chmod(self.base, 0o755)
            for path in (self.base, self.sockets):
                shutil.chown(path, user="nobody")
        run: dict[str, Any] = dict(check=True, capture_output=True, timeout=120, **self.user)
        data = str(self.base / "data")
        subprocess.run(
            [_pg_binary("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run
        )
        options = f"-c listen_addresses='' -k {self.sockets} -c max_connections=100"
        log = str(self.base / "log")
        subprocess.run([_pg_binary("pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start"], **run)
        return self

    def __exit__(self, *exc: object) -> None:
        data = str(self.base / "data")
        subprocess.run(
            [_pg_binary("pg_ctl"), "-D", data, "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
            **self.user,
        )
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}"

    async def new_database(self) -> str:
        name = "bench_" + uuid.uuid4().hex[:10]
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


def _collector_script() -> str:
    beside = Path(sys.executable).with_name("gatewatch-collector")
    return str(beside) if beside.is_file() else (shutil.which("gatewatch-collector") or str(beside))


def start_collector(db: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "GATEWATCH_KEY_RATE": "1000",
        "GATEWATCH_ACCEPT_IDENTIFIED": "true",  # identified batches: the tokens are bench/batch_verify.py's
        "GATEWATCH_CONTROL_SIGNING_SECRET": ingest.CONTROL_SECRET,
        "GATEWATCH_KEY_BURST": "1000000",
        "GATEWATCH_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_collector_script(), "serve", "--listen", "127.0.0.1:0", "--db", db],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the collector exited:\n{log.read_text(errors='replace')[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "listening":
                url = f"http://127.0.0.1:{entry['port']}"
                try:
                    with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                        if answer.status == 200:
                            return process, url
                except OSError:
                    pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the collector did not start within 60 s")


async def upload(batches: list[list[dict[str, Any]]], urls: list[str], concurrency: int) -> float:
    queue = list(enumerate(batches))
    queue.reverse()
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                index, batch = queue.pop()
                url = urls[index % len(urls)] + "/api/v1/measurements"
                async with session.post(url, json={"measurements": batch}) as response:
                    results = (await response.json())["results"]
                if response.status != 200 or {r["status"] for r in results} != {"accepted"}:
                    raise SystemExit(f"unexpected answer {response.status}: {results[:1]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def run(cluster: Cluster, processes: int, batches: list[list[dict[str, Any]]], concurrency: int) -> float:
    db = asyncio.run(cluster.new_database())
    started = [start_collector(db, cluster.base / f"collector-{processes}-{i}.log") for i in range(processes)]
    try:
        return asyncio.run(upload(batches, [url for _, url in started], concurrency))
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="measurements per run")
    parser.add_argument("--concurrency", type=int, default=4, help="uploads in flight at once")
    args = parser.parse_args()
    with Cluster() as cluster:
        one = args.count / run(cluster, 1, ingest.signed_batches(args.count), args.concurrency)
        two = args.count / run(cluster, 2, ingest.signed_batches(args.count), args.concurrency)
    print(
        f"measurements: {args.count} per run, batches of {ingest.BATCH}, {args.concurrency} uploads in flight"
    )
    print(
        f"PostgreSQL (fsync on); {os.cpu_count()} logical cores for the collectors, PostgreSQL and the client"
    )
    print(f"one collector process:    {one:10.0f} measurements/s")
    print(f"two collector processes:  {two:10.0f} measurements/s")
    print(f"two / one:                {two / one:10.3f}")


if __name__ == "__main__":
    main()

"""The pieces an end-to-end test assembles: the lab on its own event loop, a real collector process, real
agent processes bound inside the lab's networks, and read-back of what the collector stored.

Everything listens and connects on 127.0.0.0/8 only. Every wait has a deadline and every loop a bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from gatewatch.collector.store import MeasurementFilter, StoredMeasurement, open_store
from gatewatch.lab.lab import Lab
from gatewatch.lab.scripts import AGENT, COLLECTOR, console_script

__all__ = [
    "AgentRun",
    "CollectorProcess",
    "LabThread",
    "LineReader",
    "SlowLink",
    "agent_command",
    "finish_agent",
    "free_port",
    "http_get",
    "init_agent",
    "read_stored",
    "run_agent",
    "run_arguments",
    "start_agent",
]

T = TypeVar("T")

AGENT_TIMEOUT = 90.0  # one whole agent pass, worst case (a blackholed connect takes the probe's 5 s)


def agent_command(*args: str) -> list[str]:
    """The agent's command line exactly as installed: the console script beside the interpreter running
    the tests (the lab's own lookup, so the tests run what the demo runs)."""
    return [console_script(AGENT), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body (a 4xx/5xx is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class LabThread:
    """The lab runs on an event loop of its own in a background thread, so that the test's thread is free
    to drive subprocesses synchronously while the lab answers them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gatewatch-e2e-lab", daemon=True)
        self.lab: Lab | None = None

    def start(self) -> Lab:
        self.thread.start()
        self.lab = asyncio.run_coroutine_threadsafe(Lab.start(), self.loop).result(timeout=30)
        return self.lab

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the lab's loop (where servers for the lab's clients belong) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def stop(self) -> None:
        try:
            if self.lab is not None:
                asyncio.run_coroutine_threadsafe(self.lab.close(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()


class SlowLink:
    """A TCP relay standing for a slow last mile between agents of one lab network and the collector:
    whatever the collector sends reaches the agent ``delay`` seconds late. The relay connects onward
    from the network's own address, so the collector still sees (and geolocates) that network.

    Runs on the lab's event loop: ``await SlowLink.start(...)`` there, ``close()`` there too."""

    def __init__(self, upstream: tuple[str, int], source_address: str, delay: float) -> None:
        self.upstream = upstream
        self.source_address = source_address
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, upstream: tuple[str, int], source_address: str, delay: float) -> SlowLink:
        link = cls(upstream, source_address, delay)
        link.server = await asyncio.start_server(link._relay, "127.0.0.1", 0)
        link.port = int(link.server.sockets[0].getsockname()[1])
        return link

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self.upstream, local_addr=(self.source_address, 0)
            )
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.delay)
            )
        finally:
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await source.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # a killed agent resets its end: the relay just ends
        finally:
            sink.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class LineReader:
    """Collects a child's output lines on a thread, so a test can wait for one with a deadline."""

    def __init__(self, stream: IO[str], copy_to: IO[str] | None = None) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._copy = copy_to
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            if self._copy is not None:
                self._copy.write(line)
                self._copy.flush()
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, needle: str, timeout: float) -> bool:
        """True once a line containing ``needle`` has been read; False at EOF or at the deadline."""
        if any(needle in line for line in self.lines):
            return True
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            if needle in line:
                return True
        return False

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "".join(self.lines)


@dataclass
class CollectorProcess:
    """``gatewatch-collector serve`` in a subprocess, configured as an operator of the lab would."""

    workdir: Path
    lab: Lab
    process: subprocess.Popen[str] | None = None
    url: str = ""
    port: int = 0
    log: LineReader | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    _log_file: IO[str] | None = None

    @property
    def db_path(self) -> Path:
        return self.workdir / "collector.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.workdir / "collector.log"

    def start(self, timeout: float = 30.0) -> None:
        asn_csv, country_csv = self.workdir / "asn.csv", self.workdir / "country.csv"
        self.lab.write_asn_csv(asn_csv)
        self.lab.write_country_csv(country_csv)
        # Port 0: the collector takes a free port and logs which (its log masks addresses, not ports).
        command = [
            console_script(COLLECTOR),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            f"sqlite:///{self.db_path}",
            "--asn-db",
            str(asn_csv),
            "--country-db",
            str(country_csv),
            "--control-resolver",
            self.lab.resolver,
            "--ca-file",
            self.lab.ca_file,
            "--control-allow-net",
            "127.0.0.0/8",
        ]
        self._log_file = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.extra_env},
        )
        assert self.process.stdout is not None
        self.log = LineReader(self.process.stdout, copy_to=self._log_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.join()
                raise RuntimeError(f"the collector exited ({self.process.returncode}):\n{self.log.text}")
            if not self.port:
                self.port = self._logged_port()
            elif self._ready():
                self.url = f"http://127.0.0.1:{self.port}"
                return
            time.sleep(0.1)
        raise RuntimeError(f"the collector was not ready within {timeout:g} s:\n{self.log.text}")

    def _logged_port(self) -> int:
        assert self.log is not None
        for line in list(self.log.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("msg") == "listening" and entry.get("port"):
                return int(entry["port"])
        return 0

    def _ready(self) -> bool:
        try:
            status, _ = http_get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
        except OSError:
            return False
        return status == 200

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.log is not None:
            self.log.join()
        if self._log_file is not None:
            self._log_file.close()

    def get_json(self, path: str) -> Any:
        status, body = http_get(self.url + path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.url + path)


def read_stored(db_path: Path, f: MeasurementFilter | None = None) -> list[StoredMeasurement]:
    """Every row the collector stored (through the store's own interface, beside the running collector:
    SQLite's WAL lets a reader in while the collector writes)."""

    async def read() -> list[StoredMeasurement]:
        store = await open_store(f"sqlite:///{db_path}")
        try:
            return [row async for row in store.iterate(f or MeasurementFilter())]
        finally:
            await store.close()

    return asyncio.run(read())


@dataclass(frozen=True)
class AgentRun:
    returncode: int
    stdout: str
    stderr: str


def init_agent(data_dir: Path, settings: str = "") -> None:
    """``gatewatch-agent init --yes`` (consent and key), then the agent.toml a test needs, if any."""
    done = subprocess.run(
        agent_command("init", "--yes", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if settings:
        (data_dir / "agent.toml").write_text(settings, encoding="utf-8")


def run_arguments(
    lab: Lab, network: str, data_dir: Path, collector_url: str, inputs: Sequence[str]
) -> list[str]:
    """``gatewatch-agent run`` inside ``network`` of the lab: its resolver, its CA, bound to the
    network's source address, with the lab's 127.0.0.0/8 servers not treated as bogons."""
    args = [
        "run",
        "--data-dir",
        str(data_dir),
        "--collector",
        collector_url,
        "--resolver",
        lab.resolver,
        "--ca-file",
        lab.ca_file,
        "--source-address",
        lab.networks[network].source_address,
        "--routable",
        "127.0.0.0/8",
        "--verbose",
    ]
    for url in inputs:
        args += ["--input", url]
    return agent_command(*args)


def start_agent(
    lab: Lab, network: str, data_dir: Path, collector_url: str, inputs: Sequence[str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_arguments(lab, network, data_dir, collector_url, inputs),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # rich wraps its summary table at 80 columns without a terminal: give it room.
        env={**os.environ, "COLUMNS": "200"},
    )


def finish_agent(process: subprocess.Popen[str], timeout: float = AGENT_TIMEOUT) -> AgentRun:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate(timeout=10)
        raise AssertionError(f"the agent did not finish within {timeout:g} s:\n{stdout}\n{stderr}") from None
    return AgentRun(process.returncode, stdout, stderr)


def run_agent(lab: Lab, network: str, data_dir: Path, collector_url: str, inputs: Sequence[str]) -> AgentRun:
    return finish_agent(start_agent(lab, network, data_dir, collector_url, inputs))

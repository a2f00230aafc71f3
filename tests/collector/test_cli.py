"""``gatewatch-collector`` as a real process: durability under kill -9, graceful shutdown, the privacy
floor (a distinctive client address ends up in no table, log line, metric or export), ``migrate``.

Traffic stays on loopback: the collector listens on 127.0.0.1, clients bind to 127.77.0.99.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gatewatch.collector.exports import export
from gatewatch.collector.store import MeasurementFilter, open_store
from gatewatch.collector.store.migrations import POSTGRES, SQLITE

URL_PATH = "/api/v1/measurements"
CLIENT_ADDRESS = "127.77.0.99"
START_TIMEOUT = 30.0


def collector_command() -> list[str]:
    script = Path(sys.executable).parent / "gatewatch-collector"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "gatewatch.collector.cli"]


class Collector:
    """One ``gatewatch-collector serve`` process, its log in a file."""

    def __init__(self, tmp_path: Path, db: str, *args: str) -> None:
        self.db = db
        self.args = args
        self.log_path = tmp_path / f"collector-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Collector:
        command = [*collector_command(), "serve", "--listen", "127.0.0.1:0", "--db", self.db, *self.args]
        with self.log_path.open("wb") as log:
            # These tests sign with a long-term key (identified mode); the token mode has its own tests.
            env = os.environ | {"GATEWATCH_ACCEPT_IDENTIFIED": "true"}
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for entry in self.log_entries():
                if entry.get("msg") == "listening":
                    self.port = entry["port"]
                    return self
            if self.process.poll() is not None:
                pytest.fail(f"collector exited with {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        self.process.kill()
        pytest.fail(f"collector did not start within {START_TIMEOUT} s:\n{self.log_text()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"unparsed": line})
        return entries

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


@pytest.fixture
def collectors():
    started: list[Collector] = []
    yield started
    for collector in started:
        if collector.process is not None and collector.process.poll() is None:
            collector.process.kill()
            collector.process.wait(timeout=10)


def start(collectors: list[Collector], *args: Any) -> Collector:
    collector = Collector(*args)
    collectors.append(collector)
    return collector.start()


async def submit(session: aiohttp.ClientSession, base: str, batch: list[dict]) -> list[dict[str, Any]]:
    async with session.post(base + URL_PATH, json={"measurements": batch}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["results"]


async def test_kill_9_loses_nothing_acknowledged(store_url, tmp_path, collectors, sign) -> None:
    collector = start(collectors, tmp_path, store_url)
    acknowledged: dict[str, dict[str, Any]] = {}
    envelopes = [[sign() for _ in range(10)] for _ in range(200)]

    async def upload_until_killed(session: aiohttp.ClientSession) -> None:
        for batch in envelopes:  # bounded: at most 200 requests
            try:
                results = await submit(session, collector.base, batch)
            except aiohttp.ClientError:
                return  # the collector died under us: that batch was never acknowledged
            for item, result in zip(batch, results, strict=True):
                assert result["status"] == "accepted"
                acknowledged[result["measurement_uid"]] = item

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        uploading = asyncio.create_task(upload_until_killed(session))
        # Kill while uploads are in full flow, so the kill lands between commits and acknowledgements.
        for _ in range(200):
            if len(acknowledged) >= 50:
                break
            await asyncio.sleep(0.01)
        collector.kill9()
        await asyncio.wait_for(uploading, 15)
    assert len(acknowledged) >= 50

    restarted = start(collectors, tmp_path, store_url)
    store = await open_store(store_url)
    try:
        kept = {row.measurement_uid async for row in store.iterate(MeasurementFilter())}
    finally:
        await store.close()
    assert set(acknowledged) <= kept
    # The restarted collector knows them, too: sending them again is a duplicate every time.
    async with aiohttp.ClientSession() as session:
        uids = list(acknowledged)
        for i in range(0, len(uids), 100):
            again = await submit(session, restarted.base, [acknowledged[uid] for uid in uids[i : i + 100]])
            assert {result["status"] for result in again} == {"duplicate"}
    assert restarted.stop() == 0


async def test_sigterm_finishes_requests_in_flight(tmp_path, collectors, sign) -> None:
    collector = start(collectors, tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    body = json.dumps({"measurements": [sign()]}).encode()
    head = (
        f"POST {URL_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", collector.port)
    writer.write(head + body[:100])
    await writer.drain()
    await asyncio.sleep(0.3)  # the handler is now waiting for the rest of the body
    assert collector.process is not None
    collector.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert collector.process.poll() is None  # still finishing our request
    writer.write(body[100:])
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    assert b" 200 " in status_line, response
    assert b'"accepted"' in rest
    assert collector.stop() == 0
    messages = [entry.get("msg") for entry in collector.log_entries()]
    assert "stopping: finishing requests in flight" in messages and messages[-1] == "stopped"


def write_geo(tmp_path: Path) -> tuple[Path, Path]:
    asn = tmp_path / "asn.csv"
    asn.write_text("127.0.0.0,127.255.255.255,64500,Lab Clean Net\n")
    country = tmp_path / "country.csv"
    country.write_text("127.0.0.0,127.255.255.255,XA\n")
    return asn, country


async def raw_request(data: bytes, port: int) -> bytes:
    """Send bytes from the distinctive address and return whatever comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((CLIENT_ADDRESS, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return answer


async def dump_tables(store_url: str) -> str:
    """Every row of every table, as text, plus (SQLite) the raw bytes of the database files."""
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        conn = sqlite3.connect(path)
        try:
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            assert {"measurements", "envelopes", "schema_migrations"} <= set(tables)
            dump = [repr(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables]
        finally:
            conn.close()
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        return "\n".join(dump) + raw.decode("latin-1")
    conn = await asyncpg.connect(store_url)
    try:
        listed = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [r[0] for r in listed]
        assert {"measurements", "envelopes", "schema_migrations"} <= set(tables)
        dump = []
        for table in tables:
            # bytea as escaped text, so that an address's bytes would show as its characters
            rows = await conn.fetch(f'SELECT row_to_json(t)::text FROM "{table}" t')
            dump.extend(r[0] for r in rows)
            dump.extend(repr(dict(r)) for r in await conn.fetch(f'SELECT * FROM "{table}"'))
    finally:
        await conn.close()
    return "\n".join(dump)


async def test_the_client_address_is_nowhere(store_url, tmp_path, collectors, sign, make_measurement) -> None:
    asn, country = write_geo(tmp_path)
    geo = ("--asn-db", str(asn), "--country-db", str(country))
    collector = start(collectors, tmp_path, store_url, *geo, "--log-level", "DEBUG")
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        claimed = make_measurement(probe_asn="AS64501", probe_cc="XL")  # disagrees: gets flagged
        batch = [sign(claimed), sign(), sign() | {"signature": "AAAA"}]
        results = await submit(session, collector.base, batch)
        assert [r["status"] for r in results] == ["accepted", "accepted", "rejected"]
        assert (await submit(session, collector.base, batch[:1]))[0]["status"] == "duplicate"
        headers = {"X-Forwarded-For": CLIENT_ADDRESS, "X-Real-IP": CLIENT_ADDRESS}
        for path in ("/healthz", "/readyz", f"/nothing?from={CLIENT_ADDRESS}"):
            async with session.get(collector.base + path, headers=headers) as response:
                await response.read()
        async with session.post(collector.base + URL_PATH, data=b"{", headers={"Content-Type": "x/y"}) as r:
            assert r.status == 415
        # The geolocate answer is the one place the address may appear: echoed to its owner, nowhere else.
        async with session.get(collector.base + "/api/v1/geolocate") as response:
            assert (await response.json())["probe_ip"] == CLIENT_ADDRESS
        # A control naming the client's address: refused (loopback, no allow-net) and not logged either.
        control = {"input": f"http://{CLIENT_ADDRESS}:9/", "addrs": [CLIENT_ADDRESS]}
        async with session.post(collector.base + "/api/v1/control", json=control) as response:
            assert response.status == 200
            assert (await response.json())["tcp_connect"] == {}
        async with session.get(collector.base + "/metrics") as response:
            metrics_text = await response.text()
    # Malformed HTTP: answered by the collector's own connection handler (aiohttp's would log the peer).
    answer = await raw_request(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", collector.port)
    assert b" 400 " in answer.split(b"\r\n", 1)[0]
    assert b'"error": "malformed_http"' in answer
    assert collector.stop() == 0

    log = collector.log_text()
    entries = collector.log_entries()
    # The test would notice an address: requests were logged, and aiohttp's own error line was masked.
    assert any(e.get("path") == "/api/v1/measurements" and e.get("status") == 200 for e in entries)
    assert any(e.get("path") == "/api/v1/geolocate" and e.get("status") == 200 for e in entries)
    assert any(e.get("msg") == "malformed request" and e.get("status") == 400 for e in entries), log
    assert CLIENT_ADDRESS not in log and "127.77" not in log
    assert CLIENT_ADDRESS not in metrics_text

    tables = await dump_tables(store_url)
    assert "asn_mismatch" in tables  # the lookup ran; only its verdict was kept
    assert CLIENT_ADDRESS not in tables
    assert socket.inet_aton(CLIENT_ADDRESS).decode("latin-1") not in tables

    store = await open_store(store_url)
    try:
        for fmt in ("jsonl", "csv"):
            exported = b"".join([chunk async for chunk in export(fmt, store.iterate(MeasurementFilter()))])
            assert claimed.measurement_uid.encode() in exported
            assert CLIENT_ADDRESS.encode() not in exported
    finally:
        await store.close()


def test_migrate_command(store_url: str) -> None:
    done = subprocess.run(
        [*collector_command(), "migrate", "--db", store_url],
        capture_output=True,
        timeout=60,
        env=os.environ | {"GATEWATCH_LOG_LEVEL": "WARNING"},
    )
    assert done.returncode == 0, done.stderr
    latest = (SQLITE if store_url.startswith("sqlite") else POSTGRES)[-1][0]
    assert done.stdout.decode().strip() == f"schema version {latest}"
    again = subprocess.run(
        [*collector_command(), "migrate", "--db", store_url], capture_output=True, timeout=60
    )
    assert again.returncode == 0 and f"schema version {latest}".encode() in again.stdout


def test_bad_settings_are_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*collector_command(), "serve", "--listen", "nowhere", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"listen" in done.stderr


async def test_serve_flags_reach_the_endpoints(tmp_path, collectors) -> None:
    world = tmp_path / "global.csv"
    world.write_text("url,category_code\nhttps://a.example/,NEWS\n")
    collector = start(
        collectors,
        tmp_path,
        f"sqlite:///{tmp_path / 'f.db'}",
        *("--test-list", f"global={world}", "--control-rate", "0.01", "--control-burst", "1"),
        *("--control-resolver", "127.81.0.2:9", "--attribution-window-seconds", "600"),
        *("--trusted-proxy", "127.0.0.1/32", "--trusted-proxy", "::1/128"),
        *("--max-body-bytes", "1000", "--body-timeout-seconds", "5", "--header-timeout-seconds", "5"),
        *("--max-concurrent-uploads", "4"),
    )
    async with aiohttp.ClientSession() as session:
        # This client connects from 127.0.0.1, declared a load balancer: the client it names is believed ...
        forwarded = {"X-Forwarded-For": "127.88.0.7, 127.0.0.1"}
        async with session.get(collector.base + "/api/v1/geolocate", headers=forwarded) as response:
            assert (await response.json())["probe_ip"] == "127.88.0.7"
        async with session.get(collector.base + "/api/v1/test-list", params={"cc": "XL"}) as response:
            assert response.status == 200
            assert await response.text() == "url,category_code\nhttps://a.example/,NEWS\n"
        # Loopback URLs are refused without --control-allow-net: no packet is sent, the budget still counts.
        statuses = []
        for path in ("a", "b"):
            async with session.post(
                collector.base + "/api/v1/control", json={"input": f"http://127.0.0.1:9/{path}"}
            ) as response:
                statuses.append(response.status)
        assert statuses == [200, 429]
        async with session.get(collector.base + "/api/v1/interference") as response:
            assert response.status == 200 and await response.json() == {"results": []}
        upload = {"data": b" " * 1001, "headers": {"Content-Type": "application/json"}}
        async with session.post(collector.base + URL_PATH, **upload) as response:
            assert response.status == 413  # --max-body-bytes
    assert collector.stop() == 0
    assert "127.88" not in collector.log_text()  # ... and, like any client's address, never logged


def test_serve_refuses_an_unreadable_test_list(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *collector_command(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--test-list",
            f"KH={tmp_path / 'missing.csv'}",
        ],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert b"missing.csv" in done.stdout + done.stderr

"""Scale-out: two ``gatewatch-collector serve`` processes on one PostgreSQL, a load generator of real signed
batches uploading to both at once (some batches to both, racing), and one of them restarted mid-run.

Checked against the truth and against a single collector process that received the same envelopes from the
same networks: no measurement lost or stored twice, every acknowledgement given exactly once, every verdict
and flag identical, the attribution each process serves identical (each rebuilt its window from PostgreSQL
on start and follows the other's rows, collector/peer_sync.py), and the sum of the processes' per-country
counters equal to the number of measurements of each country.

The measurements are real: the lab's sites measured by the real probes from two lab networks, each upload
made from its network's source address (so geolocation agrees with what the measurement claims). Everything
runs on 127.0.0.0/8, every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from gatewatch.analysis.summarise import summarise
from gatewatch.collector.peer_sync import SETTLE, SYNC_INTERVAL
from gatewatch.core import envelope
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now
from gatewatch.lab import NETWORKS, Lab
from gatewatch.lab.networks import HOSTING
from gatewatch.lab.scripts import COLLECTOR, console_script
from gatewatch.probes.web import measure

from .conftest import CONTROL_SECRET, create_database, vouched

pytestmark = [pytest.mark.postgres, pytest.mark.lab, pytest.mark.slow]

DOMAINS = ("blockpage.lab", "isp-blockpage.lab", "clean.lab")
LAB_NETWORKS = ("isp-a", "isp-b")
AGENTS_PER_NETWORK = 4  # one signing key each (the collector rate-limits per key)
BATCHES_PER_ROUND = 2  # per agent and round
BATCH = 12
ROUNDS = 3  # process B is restarted between the first and the second, while A keeps ingesting
WITHHELD_SHARE = 0.2  # measurements that withhold their network and country (AS0 / ZZ)
START_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 30.0


@dataclass
class Collector:
    """``gatewatch-collector serve`` on a loopback port of its choosing, on a PostgreSQL database."""

    name: str
    db: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, lab: Lab) -> None:
        asn_csv, country_csv = self.workdir / "asn.csv", self.workdir / "country.csv"
        lab.write_asn_csv(asn_csv)
        lab.write_country_csv(country_csv)
        log = self.workdir / f"{self.name}-{time.monotonic_ns()}.log"
        command = [console_script(COLLECTOR), "serve", "--listen", "127.0.0.1:0", "--db", self.db]
        command += ["--asn-db", str(asn_csv), "--country-db", str(country_csv)]
        with log.open("wb") as out:
            # These uploads sign with a long-term key (identified mode); tokens have their own tests.
            env = os.environ | {
                "GATEWATCH_ACCEPT_IDENTIFIED": "true",
                "GATEWATCH_CONTROL_SIGNING_SECRET": CONTROL_SECRET,
            }
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        self.port = 0
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{log.read_text(errors='replace')}")
            for line in log.read_text(errors="replace").splitlines():
                entry = json.loads(line) if line.startswith("{") else {}
                if entry.get("msg") == "listening":
                    self.port = int(entry["port"])
            if self.port and _ready(self.url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n{log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Upload:
    network: str
    envelopes: tuple[dict[str, Any], ...]
    uids: tuple[str, ...]
    ccs: tuple[str, ...]


async def _templates(lab: Lab) -> dict[tuple[str, str], WebTestKeys]:
    """(network, domain) -> the probe's real observations, with the control measured from the clean
    vantage (as the collector's control would)."""

    def asn_of(ip: str) -> int | None:
        return HOSTING.asn if ip.startswith("127.80.") else None

    found = {}
    for domain in DOMAINS:
        url = lab.url(domain)
        control = summarise(await measure(url, lab.control_config()), asn_of)
        for network in LAB_NETWORKS:
            keys = await measure(url, lab.web_config(network))
            keys.control = control
            found[(network, domain)] = keys
    return found


def _uploads(
    lab: Lab, templates: dict[tuple[str, str], WebTestKeys], rng: random.Random
) -> list[list[Upload]]:
    """Per round, every agent's signed batches (a fresh uid and start time for each measurement)."""
    keys = {(n, a): Ed25519PrivateKey.generate() for n in LAB_NETWORKS for a in range(AGENTS_PER_NETWORK)}
    rounds: list[list[Upload]] = []
    for _ in range(ROUNDS):
        uploads = []
        for (network, _agent), key in keys.items():
            vantage = NETWORKS[network]
            for _ in range(BATCHES_PER_ROUND):
                envelopes, uids, ccs = [], [], []
                for _ in range(BATCH):
                    domain = rng.choice(DOMAINS)
                    withheld = rng.random() < WITHHELD_SHARE
                    start = utc_now() - timedelta(seconds=rng.randrange(3600))
                    m = Measurement(
                        measurement_start_time=start,
                        test_start_time=start,
                        test_runtime=0.1,
                        input=lab.url(domain),
                        probe_asn="AS0" if withheld else f"AS{vantage.asn}",
                        probe_cc="ZZ" if withheld else vantage.cc,
                        test_keys=templates[(network, domain)],
                    )
                    m = vouched(m)  # its control signed under the collectors' shared secret (issue 13)
                    envelopes.append(envelope.sign(m.to_json_bytes(), key).model_dump(mode="json"))
                    uids.append(m.measurement_uid)
                    ccs.append(m.probe_cc)
                uploads.append(Upload(network, tuple(envelopes), tuple(uids), tuple(ccs)))
        rounds.append(uploads)
    return rounds


class Networks:
    """One HTTP client per lab network, bound to its source address (the collector geolocates it)."""

    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Networks:
        for network in LAB_NETWORKS:
            connector = aiohttp.TCPConnector(local_addr=(NETWORKS[network].source_address, 0))
            self.sessions[network] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=60)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions.values():
            await session.close()

    async def post(self, upload: Upload, url: str) -> dict[str, str]:
        """uid -> status, for one batch sent to one collector."""
        async with self.sessions[upload.network].post(
            url + "/api/v1/measurements", json={"measurements": list(upload.envelopes)}
        ) as answer:
            body = await answer.json()
            assert answer.status == 200, body
        results = body["results"]
        assert [r["measurement_uid"] for r in results] == list(upload.uids)
        return {r["measurement_uid"]: r["status"] for r in results}


async def _send_round(
    networks: Networks, uploads: list[Upload], targets: list[str], rng: random.Random
) -> list[dict[str, str]]:
    """Each batch to one collector; one in four to every collector at once (a racing retry)."""

    async def one(upload: Upload) -> list[dict[str, str]]:
        if len(targets) > 1 and rng.random() < 0.25:
            return list(await asyncio.gather(*(networks.post(upload, url) for url in targets)))
        return [await networks.post(upload, rng.choice(targets))]

    answers = await asyncio.gather(*(one(upload) for upload in uploads))
    return [answer for batch in answers for answer in batch]


def _metric(text: str, name: str, label: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                totals[sample.labels[label]] += int(sample.value)
    return totals


async def _scrape(url: str) -> Counter[str]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as answer:
        return _metric(await answer.text(), "gatewatch_measurements_total", "cc")


async def _interference(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/api/v1/interference?scope=all") as answer:
            assert answer.status == 200
            rows = (await answer.json())["results"]
    return sorted(rows, key=lambda row: (row["cc"], row["domain"]))


async def _stored(url: str) -> dict[str, tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch(
            "SELECT measurement_uid, probe_cc, probe_asn, blocking, anomaly, technique, fingerprint_key,"
            " verdict_json, flags, payload FROM measurements"
        )
        envelopes = await conn.fetchval("SELECT count(*) FROM envelopes")
    finally:
        await conn.close()
    assert envelopes == len(records)
    return {r["measurement_uid"]: tuple(r)[1:] for r in records}


async def _converged(urls: list[str], reference: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each collector's attribution, once all equal ``reference`` (or at the deadline)."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
        answers = [await _interference(url) for url in urls]
        if all(answer == reference for answer in answers) or time.monotonic() > deadline:
            return answers
        await asyncio.sleep(SYNC_INTERVAL / 2)


async def test_two_collectors_on_one_postgresql_agree_with_one(pg_cluster, tmp_path: Path) -> None:
    rng = random.Random(14)
    shared, single_db = await create_database(pg_cluster), await create_database(pg_cluster)
    async with await Lab.start() as lab:
        rounds = _uploads(lab, await _templates(lab), rng)
        a, b = Collector("a", shared, tmp_path), Collector("b", shared, tmp_path)
        single = Collector("single", single_db, tmp_path)
        collectors = [a, b, single]
        to_thread: Callable[..., Any] = asyncio.to_thread
        try:
            await asyncio.gather(*(to_thread(c.start, lab) for c in collectors))
            async with Networks() as networks:
                answers = await _send_round(networks, rounds[0], [a.url, b.url], rng)
                # B stops gracefully (its counters are read first, as Prometheus's last scrape) and comes back
                # on the same database while A goes on ingesting the second round.
                b_before_restart = await _scrape(b.url)
                restart = asyncio.ensure_future(to_thread(lambda: (b.stop(), b.start(lab))))
                answers += await _send_round(networks, rounds[1][: len(rounds[1]) // 2], [a.url], rng)
                await restart
                answers += await _send_round(networks, rounds[1][len(rounds[1]) // 2 :], [a.url, b.url], rng)
                answers += await _send_round(networks, rounds[2], [a.url, b.url], rng)
                # The single-process reference: the same envelopes from the same networks.
                for upload in [u for r in rounds for u in r]:
                    assert set((await networks.post(upload, single.url)).values()) == {"accepted"}

            uploads = [u for r in rounds for u in r]
            truth = Counter(cc for u in uploads for cc in u.ccs)
            every_uid = [uid for u in uploads for uid in u.uids]
            assert len(set(every_uid)) == len(every_uid) == sum(truth.values())

            # Every measurement acknowledged exactly once; the racing copies were told "duplicate".
            statuses: dict[str, list[str]] = {}
            for answer in answers:
                for uid, status in answer.items():
                    statuses.setdefault(uid, []).append(status)
            assert set(statuses) == set(every_uid)
            assert all(sorted(s) == ["accepted"] + ["duplicate"] * (len(s) - 1) for s in statuses.values())
            assert any(len(s) > 1 for s in statuses.values())  # some batches did race

            # Nothing lost, nothing twice, and every verdict and flag as the single process judged it.
            stored, reference = await _stored(shared), await _stored(single_db)
            assert set(stored) == set(every_uid)
            assert stored == reference
            assert (
                "false" in {row[2] for row in stored.values()}
                and len({row[2] for row in stored.values()}) > 1
            )
            assert not any(row[7] for row in stored.values() if row[0] != "ZZ")  # geolocation agreed

            # Counters: A, B before its restart, and B since, add up to the truth per country.
            await asyncio.sleep(SYNC_INTERVAL + SETTLE.total_seconds())
            summed = (await _scrape(a.url)) + b_before_restart + (await _scrape(b.url))
            assert summed == truth
            assert await _scrape(single.url) == truth

            # Attribution: both processes serve what the single process serves.
            expected = await _interference(single.url)
            assert {(row["domain"], row["scope"]) for row in expected if row["cc"] == "XL"} >= {
                ("blockpage.lab", "gateway"),
                ("isp-blockpage.lab", "isp"),
            }
            assert await _converged([a.url, b.url], expected) == [expected, expected]
        finally:
            for collector in collectors:
                collector.stop()
    _no_address_logged(tmp_path)


def _no_address_logged(folder: Path) -> None:
    """The collectors' log lines never carry the uploaders' addresses."""
    logs = list(folder.glob("*.log"))
    assert len(logs) == 4  # a, b twice, single
    for log in logs:
        text = log.read_text(errors="replace")
        assert all(NETWORKS[n].source_address not in text for n in LAB_NETWORKS), log.name

"""Unlinkability (issue 12): several agents, several batches each, from two lab networks, through the real
collector. From everything the collector stores, logs and exports, no field groups batches by agent, and
no agent's long-term key (raw, base64, hex, fingerprint) appears anywhere a measurement is.

Fields checked: every column of the store's ``measurements``, ``envelopes`` and ``spent_tokens`` tables;
every leaf of every JSON Lines export document (including ``signed`` and ``analysis``); every CSV and
Parquet column; every collector log record (message and extras). A field *links* when two batches of one
agent share a value that no batch of another agent of the same network has. The only field exempt is
``received_at`` (upload timing, a limit the README's privacy section names): agents here upload one after
another, so one agent's batches arrive within the same seconds.

Runs in-process on 127.0.0.0/8: the agents' real wallet, batches and uploader, each agent bound to an
address of its lab network; the collector's real application with the lab's geolocation databases.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import random
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.agent.batches import TokenBatches
from gatewatch.agent.build import build_measurement
from gatewatch.agent.collector_api import make_session
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.testlists import TestListEntry
from gatewatch.agent.tokens import TokenWallet, TopUpPolicy
from gatewatch.agent.upload import RetryPolicy, Uploader
from gatewatch.collector.app import create_app
from gatewatch.collector.research import EXPORT_PATH
from gatewatch.collector.settings import Settings
from gatewatch.core.envelope import key_fingerprint, public_key_bytes
from gatewatch.core.measurement import WebTestKeys, utc_now
from gatewatch.core.wire import Geolocation
from gatewatch.lab.lab import Lab

NETWORKS = ("isp-a", "isp-b")
AGENTS_PER_NETWORK = 2
BATCHES_PER_AGENT = 3
BATCH = 4
URLS = [f"http://site{i}.lab/" for i in range(BATCH)]
EXEMPT = {"received_at", "analysis.received_at"}


class Agent:
    def __init__(self, name: str, network: str, source: str, workdir: Path, index: int) -> None:
        self.name, self.network, self.source = name, network, source
        self.key = Ed25519PrivateKey.generate()
        self.queue = MeasurementQueue(workdir / f"{name}.sqlite3")
        self.wallet = TokenWallet(self.queue, rng=random.Random(name))
        self.uids_by_batch: list[set[str]] = []
        self.pass_start = utc_now() - timedelta(hours=index)  # each agent's pass starts at its own time

    def secrets(self) -> list[bytes]:
        """Every spelling of the long-term key that could turn up somewhere."""
        raw = public_key_bytes(self.key)
        return [
            raw,
            base64.b64encode(raw),
            raw.hex().encode(),
            key_fingerprint(raw).encode(),
            hashlib.sha256(raw).hexdigest().encode(),
        ]


def measure(agent: Agent, lab: Lab, when_offset: int, pass_level: bool) -> list[str]:
    """One batch's worth of measurements, built as the agent builds them in unlinkable mode (each one's
    test_start_time its own start; ``pass_level``: the pass's start, as identified mode does)."""
    net = lab.networks[agent.network]
    geo = Geolocation(
        probe_asn=f"AS{net.asn}", probe_cc=net.cc, probe_network_name=net.network_name, probe_ip=""
    )
    uids = []
    for i, url in enumerate(URLS):
        started = utc_now() - timedelta(minutes=when_offset, seconds=i)
        m = build_measurement(
            TestListEntry(url),
            WebTestKeys(),
            started=started,
            pass_started=agent.pass_start if pass_level else started,
            runtime=0.2,
            geolocation=geo,
        )
        agent.queue.enqueue(m.measurement_uid, m.to_json_bytes(), None)
        uids.append(m.measurement_uid)
    return uids


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, path)
    else:
        yield path, json.dumps(value, sort_keys=True, default=str)


def linking_fields(values: dict[str, dict[str, set[str]]], batch_agent: dict[str, Agent]) -> set[str]:
    """``values[field][measurement_uid]`` = the field's values; the fields that link an agent's batches."""
    batch_of = {
        uid: (agent, index)
        for agent in batch_agent.values()
        for index, b in enumerate(agent.uids_by_batch)
        for uid in b
    }
    linking = set()
    for field, by_uid in values.items():
        if field in EXEMPT:
            continue
        holders: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for uid, found in by_uid.items():
            agent, index = batch_of[uid]
            for value in found:
                holders[value].add((agent.name, index))
        for value, batches in holders.items():
            names = {name for name, _ in batches}
            for name in names:
                own = {i for n, i in batches if n == name}
                network = batch_agent[name].network
                others = {n for n in names if n != name and batch_agent[n].network == network}
                if len(own) >= 2 and not others:
                    linking.add(f"{field}={value[:40]}")
    return linking


@pytest.mark.lab
@pytest.mark.parametrize("pass_level_start", [False, True], ids=["per-measurement-start", "pass-start"])
async def test_no_stored_logged_or_exported_field_groups_batches_by_agent(
    aiohttp_server, tmp_path: Path, caplog: pytest.LogCaptureFixture, pass_level_start: bool
) -> None:
    """With ``pass_level_start`` the measurements carry their pass's start (as before issue 12): the check
    must then find exactly that field linking batches, which shows it can fail."""
    caplog.set_level(logging.DEBUG)
    lab = Lab()
    asn, country = tmp_path / "asn.csv", tmp_path / "country.csv"
    lab.write_asn_csv(asn)
    lab.write_country_csv(country)
    db = tmp_path / "collector.db"
    settings = Settings(db=f"sqlite:///{db}", asn_db=(asn,), country_db=(country,))
    server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    base = str(server.make_url("/"))
    agents = {}
    for network in NETWORKS:
        prefix = lab.networks[network].source_address.rsplit(".", 1)[0]
        for i in range(AGENTS_PER_NETWORK):
            agent = Agent(f"{network}-{i}", network, f"{prefix}.{20 + i}", tmp_path, len(agents))
            agents[agent.name] = agent
    try:
        for round_ in range(BATCHES_PER_AGENT):
            for agent in agents.values():
                async with make_session(source_address=agent.source) as session:
                    if round_ == 0:
                        await agent.wallet.top_up(session, [base], agent.key, TopUpPolicy(low=4, high=6))
                    agent.uids_by_batch.append(set(measure(agent, lab, 10 * round_, pass_level_start)))
                    uploader = Uploader(
                        agent.queue,
                        [base],
                        session,
                        batch_size=BATCH,
                        policy=RetryPolicy(max_attempts=1),
                        batches=TokenBatches(agent.queue, agent.wallet),
                    )
                    report = await uploader.upload_pending()
                    assert (report.accepted, report.still_pending) == (BATCH, 0), report

        async def export(fmt: str) -> bytes:
            async with make_session() as session:
                response = await session.get(base.rstrip("/") + EXPORT_PATH, params={"format": fmt})
            assert response.status == 200
            return response.body

        jsonl, csv_bytes, parquet = await export("jsonl"), await export("csv"), await export("parquet")
    finally:
        for agent in agents.values():
            agent.queue.close()
    await server.close()

    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    # The store: every column of the tables a measurement is in (spent tokens are joined by their token).
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        # a token-signed batch's token and ephemeral key are stored once, in batch_tokens (migration 4)
        joined = "SELECT * FROM measurements LEFT JOIN batch_tokens USING (token_ref)"
        rows = [dict(r) for r in con.execute(joined)]
        inline = {"ephemeral_key": "batch_ephemeral_key", "token": "batch_token",
                  "token_epoch": "batch_epoch", "token_key_id": "batch_key_id"}  # fmt: skip
        for row in rows:
            for column, once in inline.items():
                row[column] = row[column] if row[column] is not None else row[once]
        # The envelopes table holds each row's signing key: here only the batches' ephemeral keys.
        enveloped = {bytes(k) for (k,) in con.execute("SELECT public_key FROM envelopes")}
        spent = [dict(r) for r in con.execute("SELECT * FROM spent_tokens")]
    for row in rows:
        for column, value in row.items():
            values[f"store.{column}"][row["measurement_uid"]].add(repr(value))
    # Exports: every leaf of every JSON document, every CSV and Parquet column.
    for line in jsonl.decode().splitlines():
        doc = json.loads(line)
        for path, value in leaves(doc):
            values[f"jsonl.{path}"][doc["measurement_uid"]].add(value)
    for record in csv.DictReader(io.StringIO(csv_bytes.decode())):
        for column, value in record.items():
            values[f"csv.{column}"][record["measurement_uid"]].add(value)
    parquet_path = tmp_path / "export.parquet"
    parquet_path.write_bytes(parquet)
    with duckdb.connect() as con:
        cursor = con.execute(f"SELECT * FROM '{parquet_path}'")
        names = [c[0] for c in cursor.description]
        for record in cursor.fetchall():
            item = dict(zip(names, record, strict=True))
            for column, value in item.items():
                values[f"parquet.{column}"][item["measurement_uid"]].add(repr(value))

    batches = len(agents) * BATCHES_PER_AGENT
    assert len(rows) == batches * BATCH
    # One ephemeral key and one token per batch, none shared: the batch is the unit of linkability.
    assert len({row["ephemeral_key"] for row in rows}) == batches
    assert enveloped == {row["ephemeral_key"] for row in rows}
    assert len({row["token"] for row in rows}) == batches == len(spent)
    for field in ("received_at", "analysis.received_at"):
        values.pop(field, None)
    exempt = {f for f in values if f.rsplit(".", 1)[-1] == "received_at"}
    linking = linking_fields({f: v for f, v in values.items() if f not in exempt}, agents)
    if pass_level_start:
        assert {f.split("=")[0] for f in linking} == {"jsonl.test_start_time"}, sorted(linking)
        return
    assert linking == set(), sorted(linking)

    # No spelling of a long-term key anywhere a measurement is: store rows, spent tokens, exports, logs.
    everything = [repr(rows).encode(), repr(spent).encode(), jsonl, csv_bytes, parquet, db.read_bytes()]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records).encode()
    issuance = {"token_issuance", "token_enrolled", "token_nonces"}  # keyed by sha256(key): never joined
    for agent in agents.values():
        for secret in agent.secrets():
            for blob in (*everything[:-1], logged):
                assert secret not in blob
    # The database file holds sha256(key) in the issuance tables only; nothing else of the key.
    with sqlite3.connect(db) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        key_hashes = {bytes(h) for (h,) in con.execute("SELECT key_hash FROM token_issuance")}
    assert issuance <= tables
    assert key_hashes == {hashlib.sha256(public_key_bytes(a.key)).digest() for a in agents.values()}
    measurement_columns = {c for row in rows for c in row} | {c for row in spent for c in row}
    assert "key_hash" not in measurement_columns  # nothing joins issuance to what was measured

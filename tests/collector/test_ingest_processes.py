"""collector/ingest_processes.py: ingest's checks in worker processes answer and store exactly what the
in-process checks do (every golden verdict, every kind of bad item, controls the workers leave to the
collector), and a worker that dies fails its batch with a 503 that stores nothing, after which the pool is
replaced and the same batch is stored once."""

from __future__ import annotations

import base64
import dataclasses
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.collector.ingest_processes import CHECK_POOL_KEY, process_count
from gatewatch.collector.settings import Settings, SettingsError
from gatewatch.collector.store.sqlite import stored_row
from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import envelope
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .conftest import ServedCollector, fetch_tokens, vouched
from .test_ingest_verdicts import _golden_cases

ROUTABLE = ("198.51.100.0/24", "203.0.113.0/24")  # the golden cases' sites (see test_ingest_verdicts.py)


def _mixed_batch(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement]
) -> list[Any]:
    """Every golden case, then one of each thing a worker rejects or leaves to the collector."""
    web = _golden_cases()
    cases = [
        make_measurement(input=case.url, test_keys=case.keys.model_copy(update={"control": case.control}))
        for case in web.CASES
    ]
    good = cases[0]
    foreign = ControlSigner(b"another collector's secret, 0123456789").sign(
        good.input, good.test_keys.control, good.measurement_start_time
    )
    other_url = vouched(good.model_copy(update={"input": "http://elsewhere.lab/"})).test_keys.control_vouch

    def with_vouch(vouch: Any) -> Measurement:  # a new measurement (its own uid) of the first case
        keys = good.test_keys.model_copy(update={"control_vouch": vouch})
        return make_measurement(input=good.input, test_keys=keys)

    odd = [
        with_vouch(foreign),
        with_vouch(other_url),
        make_measurement(input="http://novouch.lab/"),  # no control at all: no verdict, unflagged
        make_measurement(measurement_start_time=datetime.now(UTC) - timedelta(days=40)),  # too old
    ]
    batch = [sign(m) for m in cases] + [envelope.sign(m.to_json_bytes(), _AGENT).model_dump() for m in odd]
    batch.append({"payload": "not an envelope"})
    deep: Any = "x"
    for _ in range(900):  # JSON reads it; no envelope is it (nor is it pickled for a worker)
        deep = [deep]
    batch.append({"payload": deep, "signature": "", "public_key": ""})
    wrong_signature = sign(make_measurement(input="http://badsig.lab/"))
    wrong_signature["signature"] = sign()["signature"]
    batch.append(wrong_signature)
    batch.append(envelope.sign(b'{"not": "a measurement"}', _AGENT).model_dump())
    return batch


_AGENT = Ed25519PrivateKey.generate()


async def _upload(collector: ServedCollector, batch: list[Any]) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{collector.port}/api/v1/measurements"
    async with aiohttp.ClientSession() as session, session.post(url, json={"measurements": batch}) as answer:
        return answer.status, await answer.json()


def _stored(db: Path) -> list[tuple[Any, ...]]:
    """Every stored row without the time it arrived."""
    with sqlite3.connect(db) as conn:
        cursor = conn.execute("SELECT * FROM measurements ORDER BY measurement_uid")
        names = [d[0] for d in cursor.description]
        return [tuple(v for n, v in zip(names, row, strict=True) if n != "received_at") for row in cursor]


def _controls(collector: ServedCollector) -> dict[tuple[str, str], float]:
    from gatewatch.collector.appkeys import REGISTRY_KEY

    registry = collector.app[REGISTRY_KEY]
    return {
        (s.labels["source"], s.labels["refusal"]): s.value
        for family in registry.collect()
        if family.name == "gatewatch_ingest_controls"
        for s in family.samples
        if s.name.endswith("_total") and s.value
    }


async def test_workers_answer_and_store_what_the_collector_does(
    serve_collector: Callable[..., Awaitable[ServedCollector]],
    sign: Callable[..., dict[str, Any]],
    make_measurement: Callable[..., Measurement],
    tmp_path: Path,
) -> None:
    batch = _mixed_batch(sign, make_measurement)
    assert len(batch) <= 100
    answers, stored, controls = [], [], []
    for processes in (0, 2):
        db = tmp_path / f"p{processes}.db"
        collector = await serve_collector(
            db=f"sqlite:///{db}", check_processes=processes, control_allow_net=ROUTABLE
        )
        assert (CHECK_POOL_KEY in collector.app) == (processes > 0)
        status, answer = await _upload(collector, batch)
        assert status == 200
        answers.append(answer)
        stored.append(_stored(db))
        controls.append(_controls(collector))
    assert answers[0] == answers[1]
    assert stored[0] == stored[1]
    assert controls[0] == controls[1]
    statuses = [r["status"] for r in answers[0]["results"]]
    assert statuses.count("accepted") == len(_golden_cases().CASES) + 3 and statuses.count("rejected") == 5
    refusals = {refusal for _, refusal in controls[0]}
    # the workers' decisions (vouched: "") and the collector's (the others)
    assert {"", "unknown_key", "other_url", "absent"} <= refusals


async def test_a_dead_worker_fails_its_batch_and_is_replaced(
    serve_collector: Callable[..., Awaitable[ServedCollector]],
    sign: Callable[..., dict[str, Any]],
    make_measurement: Callable[..., Measurement],
    tmp_path: Path,
) -> None:
    db = tmp_path / "killed.db"
    collector = await serve_collector(db=f"sqlite:///{db}", check_processes=1)
    pool = collector.app[CHECK_POOL_KEY]
    (worker,) = pool.worker_pids()
    batch = [sign(make_measurement(input=f"http://site{n}.lab/")) for n in range(20)]
    os.kill(worker, signal.SIGKILL)
    status, answer = await _upload(collector, batch)
    assert status == 503 and answer["error"] == "store_unavailable"
    assert _stored(db) == []  # nothing of the failed batch
    status, answer = await _upload(collector, batch)  # the agent retries
    assert status == 200 and [r["status"] for r in answer["results"]] == ["accepted"] * 20
    assert pool.worker_pids() and worker not in pool.worker_pids()
    status, answer = await _upload(collector, batch)  # and again: stored once
    assert [r["status"] for r in answer["results"]] == ["duplicate"] * 20
    assert len(_stored(db)) == 20


def test_process_count() -> None:
    assert process_count(-1, cores=1) == 0  # a Raspberry Pi Zero: the collector's own threads
    assert process_count(-1, cores=2) == 2 and process_count(-1, cores=64) == 4
    assert process_count(0, cores=8) == 0 and process_count(3, cores=1) == 3
    with pytest.raises(SettingsError, match="check_processes"):
        Settings(check_processes=-2)
    assert dataclasses.replace(Settings(), check_processes=2).check_processes == 2


async def test_a_token_batch_is_stored_by_the_workers_as_by_the_collector(
    serve_collector: Callable[..., Awaitable[ServedCollector]],
    make_measurement: Callable[..., Measurement],
    agent_key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    """With a token, the workers write the token into the rows they build (the collector used to copy each
    row to add it): every row is the in-process one, its signature, ephemeral key and token the batch's."""
    measurements = [  # each with a vouched control: judged in the workers, not left to the collector
        vouched(
            make_measurement(input=case.url, test_keys=case.keys.model_copy(update={"control": case.control}))
        )
        for case in _golden_cases().CASES
    ]
    stored: list[list[Any]] = []
    for processes in (0, 2):
        db = tmp_path / f"token{processes}.db"
        collector = await serve_collector(
            db=f"sqlite:///{db}", check_processes=processes, control_allow_net=ROUTABLE
        )
        base = f"http://127.0.0.1:{collector.port}"
        async with aiohttp.ClientSession(base_url=base) as client:
            (held,) = await fetch_tokens(client, agent_key)
            body = held.batch(measurements)
            body["measurements"].append(envelope.sign(measurements[0].to_json_bytes(), _AGENT).model_dump())
            async with client.post("/api/v1/measurements", json=body) as answer:
                assert answer.status == 200
                statuses = [r["status"] for r in (await answer.json())["results"]]
        assert statuses == ["accepted"] * len(measurements) + ["rejected"]
        ephemeral = envelope.public_key_bytes(held.ephemeral)
        token = base64.b64decode(held.token.token)
        rows = []
        with sqlite3.connect(db) as conn:
            for m, item in zip(measurements, body["measurements"], strict=False):
                row = stored_row(conn, m.measurement_uid)
                assert row.signature_scheme == SCHEME_BLIND_TOKEN
                assert (row.signature, row.ephemeral_key, row.token, row.token_key_id) == (
                    base64.b64decode(item["signature"]),
                    ephemeral,
                    token,
                    held.token.key_id,
                )
                rows.append(dataclasses.replace(row, signature=None, ephemeral_key=None, token=None,
                                                token_key_id=None, received_at=None))  # fmt: skip
        stored.append(rows)
    assert stored[0] == stored[1]

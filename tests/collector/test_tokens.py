"""POST /api/v1/tokens (issue 12): signed requests, quota, replay, enrolment; and the double-spend race of
two collectors on one PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.collector.settings import Settings, SettingsError
from gatewatch.collector.store import MeasurementFilter
from gatewatch.collector.tokens import POW_CONTEXT, proof_of_work_ok
from gatewatch.core import blindrsa
from gatewatch.core.envelope import public_key_bytes
from gatewatch.core.measurement import utc_now
from gatewatch.core.vocabulary import (
    BAD_TOKEN_REQUEST,
    DOUBLE_SPEND,
    ENROLMENT_INVITE,
    ENROLMENT_PROOF_OF_WORK,
    ENROLMENT_REQUIRED,
    QUOTA_EXCEEDED,
    REPLAYED_REQUEST,
    WRONG_EPOCH,
)
from gatewatch.core.wire import IssuerKeysResponse

from .conftest import create_database, fetch_tokens, token_request
from .test_cli import Collector

TOKENS = "/api/v1/tokens"


async def published(client) -> tuple[int, str, Any]:
    answer = IssuerKeysResponse.model_validate(await (await client.get("/api/v1/issuer-keys")).json())
    key = next(k for k in answer.keys if k.epoch == answer.current_epoch)
    return answer.current_epoch, key.key_id, blindrsa.public_key_from_spki(base64.b64decode(key.public_key))


def blinded(issuer_key: Any, count: int) -> list[bytes]:
    return [blindrsa.blind(issuer_key, blindrsa.prepare(os.urandom(32)))[0] for _ in range(count)]


async def ask(client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.post(TOKENS, json=body)
    return response.status, await response.json()


@pytest.fixture
async def client(aiohttp_client, store_url: str):
    return await aiohttp_client(create_app(Settings(db=store_url, token_quota=5)))


async def test_tokens_are_counted_against_the_keys_quota_per_epoch(client, agent_key) -> None:
    epoch, key_id, issuer = await published(client)
    status, answer = await ask(client, token_request(agent_key, epoch, key_id, blinded(issuer, 3)))
    assert status == 200 and answer["remaining"] == 2 and len(answer["blind_signatures"]) == 3
    status, answer = await ask(client, token_request(agent_key, epoch, key_id, blinded(issuer, 3)))
    assert (status, answer["error"]) == (429, QUOTA_EXCEEDED)
    assert "2 tokens left" in answer["detail"]
    # Another key has its own quota; the next epoch too.
    other = Ed25519PrivateKey.generate()
    status, _ = await ask(client, token_request(other, epoch, key_id, blinded(issuer, 5)))
    assert status == 200


async def test_a_replayed_or_stale_or_badly_signed_request_is_refused(client, agent_key) -> None:
    epoch, key_id, issuer = await published(client)
    body = token_request(agent_key, epoch, key_id, blinded(issuer, 1))
    assert (await ask(client, body))[0] == 200
    status, answer = await ask(client, body)
    assert (status, answer["error"]) == (409, REPLAYED_REQUEST)
    stale = token_request(
        agent_key, epoch, key_id, blinded(issuer, 1), timestamp=utc_now() - timedelta(hours=1)
    )
    assert (await ask(client, stale))[1]["error"] == BAD_TOKEN_REQUEST
    forged = token_request(agent_key, epoch, key_id, blinded(issuer, 1))
    forged["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
    assert (await ask(client, forged))[1]["error"] == BAD_TOKEN_REQUEST
    status, answer = await ask(client, {"request": "!!", "signature": ""})
    assert (status, answer["error"]) == (400, BAD_TOKEN_REQUEST)
    status, answer = await ask(client, token_request(agent_key, epoch + 5, key_id, blinded(issuer, 1)))
    assert (status, answer["error"]) == (400, WRONG_EPOCH)
    short = token_request(agent_key, epoch, key_id, [b"\x01" * 16])
    assert (await ask(client, short))[1]["error"] == BAD_TOKEN_REQUEST


async def test_invite_enrolment_lets_in_new_keys_with_a_code_only(
    aiohttp_client, store_url, agent_key
) -> None:
    app = create_app(Settings(db=store_url, enrolment=ENROLMENT_INVITE, invite_codes=("lab-2026",)))
    client = await aiohttp_client(app)
    epoch, key_id, issuer = await published(client)
    status, answer = await ask(client, token_request(agent_key, epoch, key_id, blinded(issuer, 1)))
    assert (status, answer["error"]) == (403, ENROLMENT_REQUIRED)
    body = token_request(agent_key, epoch, key_id, blinded(issuer, 1), invite_code="lab-2026")
    assert (await ask(client, body))[0] == 200
    # Once enrolled, the key needs no code again.
    assert (await ask(client, token_request(agent_key, epoch, key_id, blinded(issuer, 1))))[0] == 200
    with pytest.raises(SettingsError):
        Settings(enrolment=ENROLMENT_INVITE)


async def test_proof_of_work_enrolment(aiohttp_client, store_url, agent_key) -> None:
    client = await aiohttp_client(
        create_app(Settings(db=store_url, enrolment=ENROLMENT_PROOF_OF_WORK, pow_bits=8))
    )
    epoch, key_id, issuer = await published(client)
    own = public_key_bytes(agent_key)
    proof = next(str(n) for n in range(100_000) if proof_of_work_ok(own, str(n), 8))
    assert hashlib.sha256(POW_CONTEXT + own + proof.encode()).digest()[0] == 0
    wrong = next(str(n) for n in range(100_000) if not proof_of_work_ok(own, str(n), 8))
    body = token_request(agent_key, epoch, key_id, blinded(issuer, 1), proof_of_work=wrong)
    assert (await ask(client, body))[1]["error"] == ENROLMENT_REQUIRED
    body = token_request(agent_key, epoch, key_id, blinded(issuer, 1), proof_of_work=proof)
    assert (await ask(client, body))[0] == 200


async def test_issuance_is_counted_in_metrics(aiohttp_client, store_url, agent_key) -> None:
    registry = CollectorRegistry()
    client = await aiohttp_client(create_app(Settings(db=store_url), registry=registry))
    await fetch_tokens(client, agent_key, 4)
    assert registry.get_sample_value("gatewatch_tokens_issued_total") == 4
    assert registry.get_sample_value("gatewatch_token_requests_total", {"result": "ok"}) == 1


@pytest.mark.postgres
async def test_two_collectors_on_one_postgresql_racing_one_token_accept_it_once(
    aiohttp_client, pg_cluster, make_measurement, agent_key
) -> None:
    url = await create_database(pg_cluster)
    first = await aiohttp_client(create_app(Settings(db=url)))
    second = await aiohttp_client(create_app(Settings(db=url)))
    (held,) = await fetch_tokens(first, agent_key)  # issued by one, spent at both: the keys are shared
    for round_ in range(5):
        if round_:
            (held,) = await fetch_tokens(second if round_ % 2 else first, agent_key)
        bodies = [held.batch([make_measurement()]), held.batch([make_measurement()])]
        responses = await asyncio.gather(
            first.post("/api/v1/measurements", json=bodies[0]),
            second.post("/api/v1/measurements", json=bodies[1]),
        )
        statuses = sorted(r.status for r in responses)
        assert statuses == [200, 409], statuses
        refused = next(r for r in responses if r.status == 409)
        assert (await refused.json())["error"] == DOUBLE_SPEND
    rows, _ = await first.app[STORE_KEY].page(MeasurementFilter(), None, 100)
    assert len(rows) == 5
    assert len({row.token for row in rows}) == 5


class Remote:
    """An aiohttp session aimed at one collector process, with the test client's get/post."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    def get(self, path: str) -> Any:
        return self.session.get(self.base + path)

    def post(self, path: str, **kw: Any) -> Any:
        return self.session.post(self.base + path, **kw)


@pytest.mark.postgres
async def test_two_collector_processes_on_one_postgresql_accept_a_raced_token_once(
    pg_cluster, tmp_path, make_measurement, agent_key
) -> None:
    url = await create_database(pg_cluster)
    processes = [Collector(tmp_path, url).start(), Collector(tmp_path, url).start()]
    try:
        async with aiohttp.ClientSession() as session:
            first, second = (Remote(session, p.base) for p in processes)
            for round_ in range(3):
                (held,) = await fetch_tokens(first if round_ % 2 == 0 else second, agent_key)
                answers = await asyncio.gather(
                    first.post("/api/v1/measurements", json=held.batch([make_measurement()])),
                    second.post("/api/v1/measurements", json=held.batch([make_measurement()])),
                )
                assert sorted(a.status for a in answers) == [200, 409]
                refused = next(a for a in answers if a.status == 409)
                assert (await refused.json())["error"] == DOUBLE_SPEND
    finally:
        for process in processes:
            process.stop()
    # Neither process logged the long-term key, in any spelling.
    raw = public_key_bytes(agent_key)
    for process in processes:
        log = process.log_text()
        for spelling in (base64.b64encode(raw).decode(), raw.hex(), hashlib.sha256(raw).hexdigest()[:16]):
            assert spelling not in log

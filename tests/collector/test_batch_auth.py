"""Unlinkable batches at ingest (issue 12): a token per batch, each refusal with its own reason, through the
real application on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.collector.batch_auth import batch_digest
from gatewatch.collector.settings import Settings
from gatewatch.collector.store import MeasurementFilter
from gatewatch.core import envelope
from gatewatch.core.batch_token import EPOCH_SECONDS, epoch_of, epoch_start
from gatewatch.core.vocabulary import (
    BAD_SIGNATURE,
    DOUBLE_SPEND,
    FORGED_TOKEN,
    REPLAYED_BATCH,
    SCHEME_BLIND_TOKEN,
    TOKEN_REQUIRED,
    UNKNOWN_KEY,
    WRONG_EPOCH,
)

from .conftest import fetch_tokens

URL = "/api/v1/measurements"


class Clock:
    """An injected clock the tests move (key rotation, epochs)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
async def client(aiohttp_client, store_url: str, registry: CollectorRegistry, clock: Clock):
    return await aiohttp_client(create_app(Settings(db=store_url), registry=registry, clock=clock))


def batches_metric(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("gatewatch_ingest_batches_total", {"result": result}) or 0.0


async def post(client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.post(URL, json=body)
    return response.status, await response.json()


async def test_a_batch_with_a_token_is_stored_with_its_token_and_no_long_term_key(
    client, registry, make_measurement, agent_key: Ed25519PrivateKey
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    measurements = [make_measurement() for _ in range(3)]
    status, answer = await post(client, held.batch(measurements))
    assert status == 200
    assert [r["status"] for r in answer["results"]] == ["accepted"] * 3
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert {row.signature_scheme for row in rows} == {SCHEME_BLIND_TOKEN}
    assert {row.ephemeral_key for row in rows} == {envelope.public_key_bytes(held.ephemeral)}
    assert {row.token for row in rows} == {base64.b64decode(held.token.token)}
    assert {row.token_epoch for row in rows} == {held.token.epoch}
    long_term = envelope.public_key_bytes(agent_key)
    for row in rows:
        assert long_term not in repr(row).encode() and long_term not in row.payload
    assert batches_metric(registry, "token") == 1


async def test_a_batch_without_a_token_is_refused_unless_identified_mode_is_on(
    aiohttp_client, store_url, client, sign
) -> None:
    status, answer = await post(client, {"measurements": [sign()]})
    assert (status, answer["error"]) == (403, TOKEN_REQUIRED)
    identified = await aiohttp_client(create_app(Settings(db=store_url, accept_identified=True)))
    status, answer = await post(identified, {"measurements": [sign()]})
    assert status == 200 and answer["results"][0]["status"] == "accepted"


async def test_identified_mode_can_list_the_keys_it_accepts(
    aiohttp_client, store_url, sign, agent_key
) -> None:
    listed = base64.b64encode(envelope.public_key_bytes(agent_key)).decode()
    app = create_app(Settings(db=store_url, identified_keys=(listed,)))
    identified = await aiohttp_client(app)
    status, _ = await post(identified, {"measurements": [sign()]})
    assert status == 200
    status, answer = await post(identified, {"measurements": [sign(key=Ed25519PrivateKey.generate())]})
    assert status == 403


async def test_a_forged_token_is_refused(client, registry, make_measurement, agent_key) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    raw = bytearray(base64.b64decode(held.token.token))
    raw[-1] ^= 1
    forged = held.token.model_copy(update={"token": base64.b64encode(bytes(raw)).decode()})
    body = held.batch([make_measurement()]) | {"token": forged.model_dump()}
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (403, FORGED_TOKEN)
    assert batches_metric(registry, FORGED_TOKEN) == 1
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert rows == []


async def test_a_token_for_another_ephemeral_key_is_refused(client, make_measurement, agent_key) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    other = Ed25519PrivateKey.generate()
    # The token claims the other key: its message is not the one the issuer signed.
    claimed = held.token.model_copy(
        update={"ephemeral_public_key": base64.b64encode(envelope.public_key_bytes(other)).decode()}
    )
    body = held.batch([make_measurement()], key=other) | {"token": claimed.model_dump()}
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (403, FORGED_TOKEN)


async def test_a_measurement_signed_by_another_key_than_the_tokens_is_rejected(
    client, make_measurement, agent_key
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    body = held.batch([make_measurement()])
    body["measurements"].append(envelope.sign(make_measurement().to_json_bytes(), agent_key).model_dump())
    status, answer = await post(client, body)
    assert status == 200
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [
        ("accepted", None),
        ("rejected", BAD_SIGNATURE),
    ]


async def test_a_tampered_measurement_is_rejected_bad_signature(client, make_measurement, agent_key) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    body = held.batch([make_measurement(), make_measurement()])
    payload = base64.b64decode(body["measurements"][1]["payload"]).replace(b"http://x.lab/", b"http://y.lab/")
    body["measurements"][1]["payload"] = base64.b64encode(payload).decode()
    status, answer = await post(client, body)
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
    assert answer["results"][1]["reason"] == BAD_SIGNATURE


async def test_an_unknown_issuer_key_is_refused(client, make_measurement, agent_key) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    body = held.batch([make_measurement()])
    body["token"]["key_id"] = "ab" * 32
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (403, UNKNOWN_KEY)


async def test_a_token_of_a_past_epoch_is_refused_once_the_overlap_is_over(
    client, registry, clock, make_measurement, agent_key
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    overlap = timedelta(seconds=Settings().token_overlap_seconds)
    # Within the overlap after its epoch: still spendable.
    clock.now = epoch_start(held.token.epoch + 1) + overlap - timedelta(seconds=1)
    status, _ = await post(client, held.batch([make_measurement(measurement_start_time=clock.now)]))
    assert status == 200
    (late,) = await fetch_tokens(client, agent_key, epoch=held.token.epoch + 1, timestamp=clock.now)
    clock.now = epoch_start(held.token.epoch + 2) + overlap
    status, answer = await post(client, late.batch([make_measurement()]))
    assert (status, answer["error"]) == (403, WRONG_EPOCH)
    assert batches_metric(registry, WRONG_EPOCH) == 1


async def test_a_token_claiming_another_epoch_than_its_key_is_refused(
    client, make_measurement, agent_key
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    body = held.batch([make_measurement()])
    body["token"]["epoch"] = held.token.epoch + 1
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (403, WRONG_EPOCH)


async def test_a_token_spent_twice_on_different_batches_is_a_double_spend(
    client, registry, make_measurement, agent_key
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    status, _ = await post(client, held.batch([make_measurement()]))
    assert status == 200
    status, answer = await post(client, held.batch([make_measurement()]))
    assert (status, answer["error"]) == (409, DOUBLE_SPEND)
    assert batches_metric(registry, DOUBLE_SPEND) == 1
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert len(rows) == 1


async def test_an_identical_resend_is_a_replay_answered_duplicate(
    client, registry, make_measurement, agent_key
) -> None:
    (held,) = await fetch_tokens(client, agent_key)
    body = held.batch([make_measurement(), make_measurement()])
    status, first = await post(client, body)
    status_again, again = await post(client, body)
    assert (status, status_again) == (200, 200)
    assert [r["status"] for r in first["results"]] == ["accepted"] * 2
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 2
    assert batches_metric(registry, REPLAYED_BATCH) == 1
    assert batches_metric(registry, "token") == 1


async def test_issuer_keys_rotate_weekly_with_overlap_and_stay_published(client, clock) -> None:
    first = await (await client.get("/api/v1/issuer-keys")).json()
    epoch = epoch_of(clock.now)
    assert first["current_epoch"] == epoch and first["epoch_seconds"] == EPOCH_SECONDS
    assert [k["epoch"] for k in first["keys"]] == [epoch, epoch + 1]  # the next one is published ahead
    clock.now += timedelta(days=15)
    later = await (await client.get("/api/v1/issuer-keys")).json()
    assert later["current_epoch"] == epoch + 2
    assert [k["epoch"] for k in later["keys"]] == [epoch, epoch + 1, epoch + 2, epoch + 3]
    assert later["keys"][:2] == first["keys"]  # old keys stay published, unchanged
    current = later["keys"][2]
    assert datetime.fromisoformat(current["valid_until"]) - datetime.fromisoformat(
        current["issue_until"]
    ) == (timedelta(seconds=Settings().token_overlap_seconds))
    records = await client.app[STORE_KEY].issuer_keys()
    assert [r.private_key is None for r in records] == [True, True, False, False]  # retired past epochs


def _reference_digest(raw_items: list[Any]) -> bytes:
    """batch_digest as first defined: each item's canonical JSON through the encoder (stored digests)."""
    digest = hashlib.sha256()
    for item in raw_items:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.digest()


_ENVELOPE_VALUES = st.one_of(st.text(), st.text(alphabet='AZaz09+/="\\\x7f\x1f é'), st.integers(), st.none())


@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {k: _ENVELOPE_VALUES for k in ("format", "payload", "public_key", "signature")}
            ),
            st.dictionaries(st.sampled_from(["format", "payload", "signature", "extra"]), _ENVELOPE_VALUES),
            st.lists(st.text(), max_size=2),
        ),
        max_size=4,
    )
)
def test_batch_digest_is_the_canonical_json_digest_whatever_the_items(items: list[Any]) -> None:
    assert batch_digest(items) == _reference_digest(items)


def test_batch_digest_of_real_envelopes(sign: Any) -> None:
    items = [sign() for _ in range(3)]
    assert batch_digest(items) == _reference_digest(items)
    assert batch_digest(items) != batch_digest(items[::-1])


@pytest.mark.parametrize("odd", ['"', "\\", "\x7f", "\x1f", "\x00", "é", "\ud800", "~ !"])
@pytest.mark.parametrize("key", ["format", "payload", "public_key", "signature"])
def test_batch_digest_escapes_what_json_escapes_in_any_envelope_value(odd: str, key: str) -> None:
    item = {"format": "ed25519-v1", "payload": "QUJD" * 300, "public_key": "a+/=", "signature": "c2ln"}
    item[key] = item[key][:8] + odd + item[key][8:]
    assert batch_digest([item]) == _reference_digest([item])
    assert batch_digest([item]) != batch_digest([item | {key: item[key].replace(odd, "")}])

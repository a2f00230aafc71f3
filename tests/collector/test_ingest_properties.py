"""Whatever is thrown at the ingest endpoint, the answer is never a 5xx (hypothesis, bounded, both stores).

One application serves every example of a test, so replays across examples really are replays.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gatewatch.collector.app import create_app
from gatewatch.collector.settings import Settings
from gatewatch.core import envelope
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now

URL = "/api/v1/measurements"
KEY = Ed25519PrivateKey.generate()
STATUSES = {"accepted", "duplicate", "rejected"}

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def valid_document() -> dict[str, Any]:
    now = utc_now()
    m = Measurement(measurement_start_time=now, test_start_time=now, test_runtime=0.1, input="http://x.lab/",
                    test_keys=WebTestKeys())  # fmt: skip
    return json.loads(m.to_json_bytes())


def sign_bytes(payload: bytes) -> dict[str, Any]:
    return envelope.sign(payload, KEY).model_dump()


# A few envelopes signed once, replayed by many examples.
REPLAYS = [sign_bytes(json.dumps(valid_document()).encode()) for _ in range(3)]


@st.composite
def mutated_measurements(draw: st.DrawFn) -> dict[str, Any]:
    """A correctly signed envelope around a measurement with one field replaced by anything."""
    document = valid_document()
    target = draw(st.sampled_from([document, document["test_keys"]]))
    field = draw(st.sampled_from(sorted(target)) | st.text(max_size=12))
    target[field] = draw(json_values | st.text(max_size=3000))
    return sign_bytes(json.dumps(document).encode())


@st.composite
def broken_signatures(draw: st.DrawFn) -> dict[str, Any]:
    item = dict(draw(st.sampled_from(REPLAYS)))
    raw = bytearray(base64.b64decode(item[draw(st.sampled_from(["signature", "public_key", "payload"]))]))
    if raw:
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    field = draw(st.sampled_from(["signature", "public_key", "payload"]))
    item[field] = base64.b64encode(bytes(raw)).decode()
    return item


@st.composite
def odd_envelopes(draw: st.DrawFn) -> Any:
    """Envelope-shaped objects with a field of the wrong type, missing, or added."""
    item: dict[str, Any] = dict(draw(st.sampled_from(REPLAYS)))
    field = draw(st.sampled_from(["format", "payload", "signature", "public_key", "extra"]))
    if draw(st.booleans()):
        item.pop(field, None)
    else:
        item[field] = draw(json_values)
    return item


items = (
    st.sampled_from(REPLAYS)
    | mutated_measurements()
    | broken_signatures()
    | odd_envelopes()
    | json_values
    | st.builds(lambda b: sign_bytes(b), st.binary(max_size=200))
)


@pytest.fixture
async def client(aiohttp_client, store_url: str):
    # A large allowance: these tests are about content, not the rate limit.
    app = create_app(
        Settings(
            db=store_url,
            accept_identified=True,
            key_burst=1_000_000,
            key_rate=1000.0,
            max_body_bytes=1_000_000,
        )
    )
    return await aiohttp_client(app)


async def check(response) -> None:
    assert response.status < 500, await response.text()
    answer = await response.json()
    if response.status == 200:
        assert {result["status"] for result in answer["results"]} <= STATUSES
    else:
        assert set(answer) == {"error", "detail"}


@PROPERTY_SETTINGS
@given(batch=st.lists(items, max_size=8))
async def test_batches_of_anything(client, batch: list[Any]) -> None:
    response = await client.post(URL, json={"measurements": batch})
    await check(response)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["index"] for r in results] == list(range(len(batch)))


@PROPERTY_SETTINGS
@given(body=json_values | st.lists(items, max_size=3).map(lambda b: {"measurements": b, "more": 1}))
async def test_documents_of_any_shape(client, body: Any) -> None:
    await check(await client.post(URL, json=body))


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=3000), content_type=st.sampled_from(["application/json", "text/plain", ""]))
@example(body=b"[" * 200_000, content_type="application/json")
@example(body=b'{"measurements": [' + b"1," * 200_000 + b"1]}", content_type="application/json")
@example(body=b'{"measurements": ["' + b"x" * 900_000 + b'"]}', content_type="application/json")
@example(body=b'{"measurements": [{"payload": "' + b"A" * 900_000 + b'"}]}', content_type="application/json")
@example(body=b'{"measurements": [' + b"9" * 5000 + b"]}", content_type="application/json")
@example(body=b"\xff" * 10, content_type="application/json")
async def test_bytes_of_anything(client, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    await check(await client.post(URL, data=body, headers=headers))


# Tokens of any shape (issue 12): a well-formed-looking one that does not verify, and arbitrary JSON.
_b64_text = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
tokens = (
    st.fixed_dictionaries(
        {
            "epoch": st.integers(min_value=-5, max_value=2**64),
            "key_id": st.text("0123456789abcdef", min_size=0, max_size=70),
            "ephemeral_public_key": _b64_text,
            "token": _b64_text,
        }
    )
    | json_values
)


@PROPERTY_SETTINGS
@given(token=tokens, batch=st.lists(items, max_size=3))
async def test_tokens_of_any_shape_are_refused_with_a_reason(client, token: Any, batch: list[Any]) -> None:
    response = await client.post(URL, json={"measurements": batch, "token": token})
    await check(response)
    if token is not None:  # null is "no token": this collector also accepts identified batches
        assert response.status in (400, 403)

"""Issue 11's collector half, through the real application on both stores: a bad item rejects only itself
(times at the calendar's edge, uids that are no UUIDv7), a reused uid is a ``uid_conflict`` while a
byte-identical resend is a counted ``duplicate``, every error of the upload endpoint is counted, and an
IPv4 ``--control-allow-net`` range allows no IPv6 form of its addresses when DNS answers are re-judged."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import RATE_LIMIT_KEY, STORE_KEY
from gatewatch.collector.judging import rederive_dns_answers
from gatewatch.collector.metrics import REQUEST_RESULTS
from gatewatch.collector.settings import Settings
from gatewatch.collector.store import MeasurementFilter, StoredMeasurement
from gatewatch.core import envelope
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys, new_measurement_uid
from gatewatch.core.observations import DNSAnswer, DNSQuery, DNSReply
from gatewatch.core.vocabulary import UID_CONFLICT

from .conftest import CONTROL_SECRET

URL = "/api/v1/measurements"
# Valid ISO 8601 times whose UTC form leaves years 1-9999 (the two, and the widest offsets).
EDGE_TIMES = (
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999-23:59",
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(aiohttp_client, store_url: str, registry: CollectorRegistry):
    return await aiohttp_client(create_app(Settings(db=store_url, accept_identified=True), registry=registry))


def requests_total(registry: CollectorRegistry) -> dict[str, float]:
    return {r: registry.get_sample_value("gatewatch_ingest_requests_total", {"result": r}) or 0.0
            for r in REQUEST_RESULTS}  # fmt: skip


def items_metric(registry: CollectorRegistry, result: str, reason: str = "") -> float:
    value = registry.get_sample_value("gatewatch_ingest_items_total", {"result": result, "reason": reason})
    return value or 0.0


def signed_document(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """An envelope over exactly these JSON bytes (the agent's key signs whatever it is given)."""
    return envelope.sign(json.dumps(document).encode(), key).model_dump()


async def post(client, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(URL, json={"measurements": list(items)})
    assert response.status == 200, await response.text()
    return (await response.json())["results"]


async def stored(client) -> dict[str, StoredMeasurement]:
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 1000)
    return {row.measurement_uid: row for row in rows}


# --- one bad item rejects only itself --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["measurement_start_time", "test_start_time"])
@pytest.mark.parametrize("when", EDGE_TIMES)
async def test_a_time_at_the_calendars_edge_rejects_only_its_item(
    client, sign, make_measurement, agent_key, field: str, when: str
) -> None:
    document = json.loads(make_measurement().to_json_bytes())
    document[field] = when
    good = [make_measurement(), make_measurement()]
    results = await post(client, sign(good[0]), signed_document(document, agent_key), sign(good[1]))
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["reason"] == "invalid_measurement"
    assert set(await stored(client)) == {m.measurement_uid for m in good}


@pytest.mark.parametrize("when", EDGE_TIMES)
async def test_query_times_and_cursors_at_the_calendars_edge_are_400s(client, when: str) -> None:
    for query in ({"since": when}, {"until": when}):
        response = await client.get(URL, params=query)
        assert response.status == 400
        assert set(await response.json()) == {"error", "detail"}
    cursor = base64.urlsafe_b64encode(json.dumps([when, new_measurement_uid()]).encode()).decode().rstrip("=")
    response = await client.get(URL, params={"cursor": cursor})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_cursor"


# --- identity: a real UUIDv7; a reused uid is a conflict, a resend a duplicate ------------------------------


def _v7_with(version: int) -> str:
    value = uuid.UUID(new_measurement_uid()).int & ~(0xF << 76) | (version << 76)
    return str(uuid.UUID(int=value))


BAD_UIDS = {
    "dashes": "-" * 36,
    "zeros": "0" * 36,
    "nil": str(uuid.UUID(int=0)),
    "v4": str(uuid.uuid4()),
    "v7-upper-case": new_measurement_uid().upper(),
    "v7-no-dashes": new_measurement_uid().replace("-", ""),
    "v8": _v7_with(8),
    "v7-wrong-variant": str(uuid.UUID(int=uuid.UUID(new_measurement_uid()).int & ~(0b11 << 62))),
    "braced": "{" + new_measurement_uid()[1:-1] + "}",
}


@pytest.mark.parametrize("name", BAD_UIDS)
async def test_a_uid_that_is_no_uuid_v7_rejects_only_its_item(
    client, sign, make_measurement, agent_key, name: str
) -> None:
    document = json.loads(make_measurement().to_json_bytes())
    document["measurement_uid"] = BAD_UIDS[name]
    good = make_measurement()
    results = await post(client, signed_document(document, agent_key), sign(good))
    assert [(r["status"], r["reason"]) for r in results] == [
        ("rejected", "invalid_measurement"),
        ("accepted", None),
    ]


def test_new_uids_are_what_the_pattern_asks_for() -> None:
    for _ in range(200):
        uid = new_measurement_uid()
        assert uuid.UUID(uid).version == 7 and uuid.UUID(uid).variant == uuid.RFC_4122
        assert Measurement.model_validate(
            {**json.loads(Measurement(measurement_uid=uid, measurement_start_time="2026-01-01T00:00:00Z",
                                      test_start_time="2026-01-01T00:00:00Z", test_runtime=0, input="http://x/",
                                      test_keys=WebTestKeys()).to_json_bytes())}
        ).measurement_uid == uid  # fmt: skip
    for name, bad in BAD_UIDS.items():
        with pytest.raises(ValueError, match="measurement_uid"):
            Measurement.model_validate({"measurement_uid": bad})
        assert name


async def test_a_byte_identical_resend_is_a_counted_duplicate(
    client, sign, make_measurement, registry
) -> None:
    m = make_measurement()
    item = sign(m)
    assert (await post(client, item))[0]["status"] == "accepted"
    # The agent's answer was lost; it sends the same envelope again (or re-signs the same bytes).
    again = await post(client, item, sign(m))
    assert [(r["status"], r["reason"]) for r in again] == [("duplicate", None)] * 2
    assert items_metric(registry, "duplicate") == 2
    assert items_metric(registry, "accepted") == 1


async def test_a_stored_uid_with_another_payload_is_a_uid_conflict(
    client, sign, make_measurement, registry
) -> None:
    first = make_measurement()
    assert (await post(client, sign(first)))[0]["status"] == "accepted"
    other = make_measurement(measurement_uid=first.measurement_uid, input="http://y.lab/")
    tweaked = first.model_copy(update={"test_runtime": first.test_runtime + 1})  # one field differs
    results = await post(client, sign(other), sign(tweaked), sign(first))
    assert [(r["status"], r["reason"]) for r in results] == [
        ("rejected", UID_CONFLICT), ("rejected", UID_CONFLICT), ("duplicate", None)
    ]  # fmt: skip
    assert items_metric(registry, "rejected", UID_CONFLICT) == 2
    rows = await stored(client)
    assert rows[first.measurement_uid].payload == first.to_json_bytes()  # the first one stays


async def test_two_payloads_under_one_uid_in_one_batch(client, sign, make_measurement) -> None:
    first = make_measurement()
    second = make_measurement(measurement_uid=first.measurement_uid, input="http://y.lab/")
    results = await post(client, sign(first), sign(second), sign(first))
    assert [(r["status"], r["reason"]) for r in results] == [
        ("accepted", None), ("rejected", UID_CONFLICT), ("duplicate", None)
    ]  # fmt: skip


# --- every answer of the upload endpoint is counted ------------------------------------------------------


async def test_every_error_of_the_upload_endpoint_is_counted_once(
    aiohttp_client, tmp_path, sign, registry
) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'x.db'}", max_body_bytes=4096, key_burst=1, accept_identified=True
    )
    app = create_app(settings, registry=registry)
    client = await aiohttp_client(app)
    json_type = {"Content-Type": "application/json"}
    attempts = [
        ("post", {"data": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ("post", {"data": b"not json", "headers": json_type}, 400),
        ("post", {"data": b'{"measurements": 1}', "headers": json_type}, 400),
        ("post", {"data": b"x" * 5000, "headers": json_type}, 413),
        ("post", {"data": b"not gzip", "headers": {**json_type, "Content-Encoding": "gzip"}}, 400),
        ("post", {"data": b"{}", "headers": {**json_type, "Content-Encoding": "br"}}, 415),
        ("post", {"json": {"measurements": [sign()]}}, 200),
        ("post", {"json": {"measurements": [sign()]}}, 429),  # the key's burst of one is spent
        ("put", {"json": {}}, 405),
    ]
    for method, kwargs, status in attempts:
        before = sum(requests_total(registry).values())
        response = await getattr(client, method)(URL, **kwargs)
        assert response.status == status, await response.text()
        if status != 200:
            assert set(await response.json()) == {"error", "detail"}
        assert sum(requests_total(registry).values()) == before + 1, (method, kwargs, status)


async def test_a_bug_in_ingest_is_a_counted_500(aiohttp_client, tmp_path, sign, registry) -> None:
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'x.db'}", accept_identified=True), registry=registry)
    app[RATE_LIMIT_KEY] = None  # type: ignore[assignment]  # a bug: the rate limiter is missing
    client = await aiohttp_client(app)
    response = await client.post(URL, json={"measurements": [sign()]})
    assert response.status == 500
    assert await response.json() == {"error": "internal_error", "detail": "see the collector's log"}
    assert requests_total(registry)["internal_error"] == 1


# --- lab mode: an IPv4 allow-net allows no IPv6 form of its addresses -----------------------------------


def _keys_answering(address: str) -> WebTestKeys:
    control = ControlObservations(
        dns=ControlDNS(addrs=["127.80.0.5"]),
        tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
        http_request=ControlHTTP(status_code=200, body_length=100, title="x"),
    )
    answer = DNSAnswer(answer_type="AAAA", ipv6=address, bogon=False)
    reply = DNSReply(t=0.01, rcode="NOERROR", answers=[answer])
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab", query_type="AAAA", t0=0.0, t=0.01,
                     rcode="NOERROR", answers=[answer], replies=[reply])  # fmt: skip
    return WebTestKeys(queries=[query], control=control)


EMBEDDING_127 = ("::7f50:9", "64:ff9b::7f50:9", "2002:7f50:9::1")


async def test_ipv6_forms_of_an_allowed_ipv4_address_are_judged_bogons(
    aiohttp_client, store_url, sign, make_measurement
) -> None:
    app = create_app(
        Settings(
            db=store_url,
            control_allow_net=("127.0.0.0/8",),
            accept_identified=True,
            control_signing_secret=CONTROL_SECRET,
        )
    )
    client = await aiohttp_client(app)
    measurements = {
        address: make_measurement(test_keys=_keys_answering(address)) for address in EMBEDDING_127
    }
    assert {r["status"] for r in await post(client, *map(sign, measurements.values()))} == {"accepted"}
    rows = await stored(client)
    for address, m in measurements.items():
        row = rows[m.measurement_uid]
        assert (row.blocking, row.technique) == ("dns", "dns.bogon"), address


def test_the_mapped_form_is_the_allowed_ipv4_address() -> None:
    derived = rederive_dns_answers(_keys_answering("::ffff:127.80.0.9"), ("127.0.0.0/8",), None)
    assert derived.queries[0].answers[0].bogon is False
    for address in EMBEDDING_127:
        derived = rederive_dns_answers(_keys_answering(address), ("127.0.0.0/8",), None)
        assert derived.queries[0].answers[0].bogon is True

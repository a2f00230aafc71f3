"""POST /api/v1/measurements through the real application, against SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from gatewatch.analysis import analyse
from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import INGEST_HOOKS_KEY, STORE_KEY
from gatewatch.collector.judging import rederive_dns_answers
from gatewatch.collector.logging import JSONLineFormatter
from gatewatch.collector.settings import Settings
from gatewatch.collector.store import MeasurementFilter, StoredMeasurement
from gatewatch.core import envelope
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import WebTestKeys, utc_now
from gatewatch.core.observations import DNSAnswer, DNSQuery, DNSReply
from gatewatch.core.verdicts import Verdict

from .conftest import CONTROL_SECRET, vouched

URL = "/api/v1/measurements"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_client(aiohttp_client, store_url: str, registry: CollectorRegistry):
    async def make(**overrides: Any):
        overrides.setdefault("control_signing_secret", CONTROL_SECRET)
        app = create_app(
            Settings(db=store_url, **({"accept_identified": True} | overrides)), registry=registry
        )
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client):
    return await make_client()


def items_metric(registry: CollectorRegistry, result: str, reason: str = "") -> float:
    value = registry.get_sample_value("gatewatch_ingest_items_total", {"result": result, "reason": reason})
    return value or 0.0


def requests_metric(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("gatewatch_ingest_requests_total", {"result": result}) or 0.0


async def stored(client) -> list[StoredMeasurement]:
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 1000)
    return rows


async def post(client, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(URL, json={"measurements": list(items)})
    assert response.status == 200, await response.text()
    return (await response.json())["results"]


def nxdomain_keys(claimed: Verdict | None = None) -> WebTestKeys:
    """The resolver said NXDOMAIN while the control resolved the name and fetched the page: DNS blocking."""
    control = ControlObservations(
        dns=ControlDNS(addrs=["127.80.0.5"]),
        tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
        http_request=ControlHTTP(status_code=200, body_length=100, title="x"),
    )
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab", query_type="A", t0=0.0, t=0.01,
                     failure="dns_nxdomain_error", rcode="NXDOMAIN")  # fmt: skip
    return WebTestKeys(queries=[query], control=control, verdict=claimed)


async def test_accepts_and_stores_the_exact_signed_bytes(client, sign, make_measurement, registry) -> None:
    m = make_measurement()
    item = sign(m)
    results = await post(client, item)
    expected = {"index": 0, "measurement_uid": m.measurement_uid, "status": "accepted", "reason": None}
    assert results == [expected]
    (row,) = await stored(client)
    assert row.payload == base64.b64decode(item["payload"]) == m.to_json_bytes()
    assert (row.measurement_uid, row.probe_cc, row.probe_asn) == (m.measurement_uid, "XL", "AS64501")
    assert (row.input, row.domain, row.test_name) == ("http://x.lab/", "x.lab", "web")
    assert row.measurement_start_time == m.measurement_start_time
    assert row.flags == ()
    assert items_metric(registry, "accepted") == 1
    assert requests_metric(registry, "ok") == 1
    assert registry.get_sample_value("gatewatch_ingest_last_accepted_timestamp_seconds") > 0
    assert registry.get_sample_value("gatewatch_store_seconds_count", {"operation": "insert"}) == 1
    assert registry.get_sample_value("gatewatch_ingest_request_seconds_count") == 1


async def test_replays_are_duplicates(client, sign, make_measurement, registry) -> None:
    a, b = sign(make_measurement()), sign(make_measurement())
    assert [r["status"] for r in await post(client, a)] == ["accepted"]
    assert [r["status"] for r in await post(client, a, b, b)] == ["duplicate", "accepted", "duplicate"]
    assert len(await stored(client)) == 2
    assert items_metric(registry, "duplicate") == 2


async def test_the_verdict_is_rederived_never_trusted(client, sign, make_measurement) -> None:
    # The agent claims "no interference" for a measurement that shows DNS blocking...
    claims_clean = Verdict(blocking=False, accessible=True)
    blocked = make_measurement(test_keys=nxdomain_keys(claimed=claims_clean))
    # ...and claims DNS blocking for one with no observations at all.
    claims_dns = Verdict(blocking="dns", accessible=False)
    empty = make_measurement(test_keys=WebTestKeys(verdict=claims_dns))
    await post(client, sign(blocked), sign(empty))
    rows = {r.measurement_uid: r for r in await stored(client)}
    judged = rows[blocked.measurement_uid]
    assert (judged.blocking, judged.anomaly, judged.technique) == ("dns", True, "dns.nxdomain")
    assert judged.fingerprint_key is not None
    assert Verdict.model_validate_json(judged.verdict_json).blocking == "dns"
    unjudged = rows[empty.measurement_uid]
    assert (unjudged.blocking, unjudged.anomaly, unjudged.technique) == ("null", False, None)


async def test_each_item_is_answered_on_its_own(client, sign, make_measurement, registry) -> None:
    key = Ed25519PrivateKey.generate()
    good = make_measurement()
    tampered = sign(make_measurement())
    tampered["payload"] = base64.b64encode(make_measurement().to_json_bytes()).decode()
    wrong_key = sign(make_measurement())
    wrong_key["public_key"] = base64.b64encode(envelope.public_key_bytes(key)).decode()
    bad_format = sign(make_measurement()) | {"format": "gatewatch-envelope/9"}
    not_base64 = sign(make_measurement()) | {"signature": "%%%"}
    not_json = envelope.sign(b"{not json", key).model_dump()
    # A measurement smuggling the probe's address is refused by the model, not stored.
    with_ip = json.loads(make_measurement().to_json_bytes()) | {"probe_ip": "198.51.100.7"}
    smuggled = envelope.sign(json.dumps(with_ip).encode(), key).model_dump()
    future = sign(make_measurement(measurement_start_time=utc_now() + timedelta(hours=2)))
    old = sign(make_measurement(measurement_start_time=utc_now() - timedelta(days=31)))
    batch = [sign(good), tampered, wrong_key, bad_format, not_base64, not_json, smuggled, future, old,
             {"payload": 3}, "a string", None]  # fmt: skip
    results = await post(client, *batch)
    assert [r["index"] for r in results] == list(range(len(batch)))
    assert [(r["status"], r["reason"]) for r in results] == [
        ("accepted", None),
        ("rejected", "bad_signature"),
        ("rejected", "bad_signature"),
        ("rejected", "unsupported_format"),
        ("rejected", "bad_signature_encoding"),
        ("rejected", "invalid_json"),
        ("rejected", "invalid_measurement"),
        ("rejected", "too_far_in_future"),
        ("rejected", "too_old"),
        ("rejected", "invalid_envelope"),
        ("rejected", "invalid_envelope"),
        ("rejected", "invalid_envelope"),
    ]
    assert results[0]["measurement_uid"] == good.measurement_uid
    assert results[7]["measurement_uid"] is not None  # parsed, then refused for its time
    assert results[1]["measurement_uid"] is None  # never trusted enough to be read
    assert [r.measurement_uid for r in await stored(client)] == [good.measurement_uid]
    assert items_metric(registry, "rejected", "bad_signature") == 2
    assert items_metric(registry, "rejected", "invalid_envelope") == 3
    assert items_metric(registry, "rejected", "too_old") == 1
    assert items_metric(registry, "rejected", "other") == 0  # every reason above is in the vocabulary


async def test_age_limit_is_configurable(make_client, sign, make_measurement) -> None:
    client = await make_client(max_age_seconds=60.0, max_future_seconds=1.0)
    old = make_measurement(measurement_start_time=utc_now() - timedelta(minutes=5))
    soon = make_measurement(measurement_start_time=utc_now() + timedelta(minutes=1))
    results = await post(client, sign(old), sign(soon))
    assert [r["reason"] for r in results] == ["too_old", "too_far_in_future"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b"\xff\xfe\x00", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b"[" * 100_000, {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b"[]", {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b'{"measurements": {}}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b'{"measurements": [], "x": 1}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b'{"measurements": []}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"measurements": []}', {}, 415, "unsupported_media_type"),
    ],
)
async def test_malformed_requests_are_4xx(client, body, headers, status, error, registry) -> None:
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == status
    answer = await response.json()
    assert answer["error"] == error and answer["detail"]
    assert await stored(client) == []
    assert sum(requests_metric(registry, r) for r in ("bad_request", "unsupported_media_type")) == 1


async def test_empty_batch_is_answered(client) -> None:
    assert await post(client) == []


async def test_batch_and_body_limits(make_client, sign, registry) -> None:
    client = await make_client(max_batch=3, max_body_bytes=20_000)
    response = await client.post(URL, json={"measurements": [sign() for _ in range(4)]})
    assert response.status == 400
    assert (await response.json())["error"] == "batch_too_large"
    big = json.dumps({"measurements": [sign() | {"pad": "x" * 30_000}]}).encode()
    response = await client.post(URL, data=big, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"

    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b" " * 5_000

    response = await client.post(URL, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert requests_metric(registry, "too_large") == 2
    assert len(await post(client, *[sign() for _ in range(3)])) == 3


async def test_rate_limit_per_key(make_client, sign, make_measurement, agent_key) -> None:
    client = await make_client(key_burst=2, key_rate=0.01)
    for _ in range(2):
        assert (await post(client, sign()))[0]["status"] == "accepted"
    response = await client.post(URL, json={"measurements": [sign()]})
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"] == "rate_limited"
    # Another agent is not affected...
    other = Ed25519PrivateKey.generate()
    assert (await post(client, sign(key=other)))[0]["status"] == "accepted"
    # ...and nobody can spend an agent's allowance with its public key and a forged signature.
    victim = Ed25519PrivateKey.generate()
    forged = sign(key=other) | {"public_key": base64.b64encode(envelope.public_key_bytes(victim)).decode()}
    for _ in range(3):
        assert (await post(client, forged))[0]["reason"] == "bad_signature"
    assert (await post(client, sign(key=victim)))[0]["status"] == "accepted"


async def test_an_over_limit_key_is_refused_before_any_verification(make_client, sign) -> None:
    client = await make_client(key_burst=1, key_rate=0.01)
    assert (await post(client, sign()))[0]["status"] == "accepted"
    # the key has no allowance left: its next batch is refused before verification (a signature that
    # would not verify shows it: verified, this item would be rejected as bad_signature with a 200)
    broken = sign() | {"signature": base64.b64encode(bytes(64)).decode()}
    response = await client.post(URL, json={"measurements": [broken]})
    assert response.status == 429 and (await response.json())["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


def write_geo(tmp_path: Path) -> tuple[Path, Path]:
    """ip-location-db style CSVs placing all of loopback in AS64500, country XA."""
    asn = tmp_path / "asn.csv"
    asn.write_text("127.0.0.0,127.255.255.255,64500,Lab Clean Net\n")
    country = tmp_path / "country.csv"
    country.write_text("127.0.0.0,127.255.255.255,XA\n")
    return asn, country


async def test_claims_that_disagree_with_the_connection_are_flagged(make_client, sign, make_measurement,
                                                                    tmp_path) -> None:  # fmt: skip
    asn, country = write_geo(tmp_path)
    client = await make_client(asn_db=(asn,), country_db=(country,))
    claims = {
        "both": make_measurement(probe_asn="AS64501", probe_cc="XL"),
        "asn": make_measurement(probe_asn="AS64501", probe_cc="XA"),
        "none": make_measurement(probe_asn="AS64500", probe_cc="XA"),
        "withheld": make_measurement(probe_asn="AS0", probe_cc="ZZ"),
    }
    results = await post(client, *(sign(m) for m in claims.values()))
    assert {r["status"] for r in results} == {"accepted"}  # flagged, but kept
    flags = {r.measurement_uid: r.flags for r in await stored(client)}
    assert flags[claims["both"].measurement_uid] == ("asn_mismatch", "cc_mismatch")
    assert flags[claims["asn"].measurement_uid] == ("asn_mismatch",)
    assert flags[claims["none"].measurement_uid] == ()
    assert flags[claims["withheld"].measurement_uid] == ()


async def test_hooks_see_new_rows_only_and_cannot_break_ingest(client, sign) -> None:
    seen: list[str] = []
    seen_async: list[str] = []

    def hook(rows) -> None:
        seen.extend(r.measurement_uid for r in rows)

    async def async_hook(rows) -> None:
        seen_async.extend(r.measurement_uid for r in rows)

    def broken(rows) -> None:
        raise RuntimeError("consumer bug")

    client.app[INGEST_HOOKS_KEY].extend([broken, hook, async_hook])
    a, b = sign(), sign()
    first = await post(client, a)
    second = await post(client, a, b)
    assert [r["status"] for r in first + second] == ["accepted", "duplicate", "accepted"]
    assert seen == seen_async == [first[0]["measurement_uid"], second[1]["measurement_uid"]]


async def test_store_outage_is_503_not_500(client, sign, registry) -> None:
    await client.app[STORE_KEY].close()
    response = await client.post(URL, json={"measurements": [sign()]})
    assert response.status == 503
    assert (await response.json())["error"] == "store_unavailable"
    assert "Retry-After" in response.headers
    assert requests_metric(registry, "store_unavailable") == 1


# --- data the store cannot hold ----------------------------------------------------------------------


def signed_bytes(payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    return envelope.sign(payload, key).model_dump()


async def test_a_nul_in_a_top_level_field_is_refused_per_item(client, sign, make_measurement, agent_key,
                                                              registry) -> None:  # fmt: skip
    # Crafted bytes, as a modified agent could sign them: the model refuses the NUL before any store sees it.
    m = make_measurement()
    payload = m.to_json_bytes().replace(b'"input":"http://x.lab/"', b'"input":"http://x.lab/\\u0000"')
    assert b"\\u0000" in payload
    good = make_measurement()
    results = await post(client, signed_bytes(payload, agent_key), sign(good))
    assert [(r["status"], r["reason"]) for r in results] == [
        ("rejected", "invalid_measurement"),
        ("accepted", None),
    ]
    assert [r.measurement_uid for r in await stored(client)] == [good.measurement_uid]
    assert requests_metric(registry, "store_unavailable") == 0


async def test_a_nul_inside_the_observations_is_stored(client, sign, make_measurement) -> None:
    # Inside test_keys anything may appear (a censor's reply, a body): it lives in the signed bytes only,
    # which every store keeps as bytes, so it is no reason to refuse the measurement.
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab\x00evil", query_type="A", t0=0.0,
                     t=0.01, failure="dns_nxdomain_error", rcode="NXDOMAIN")  # fmt: skip
    m = make_measurement(test_keys=WebTestKeys(queries=[query]))
    assert [r["status"] for r in await post(client, sign(m))] == ["accepted"]
    (row,) = await stored(client)
    assert row.payload == m.to_json_bytes()


async def narrow_the_store(client, store_url: str, limit: int) -> None:
    """Make the real store refuse values longer than ``limit`` characters, as a backend refuses data it
    cannot hold (PostgreSQL: a column type that is too narrow; SQLite: its length limit)."""
    if store_url.startswith("sqlite"):
        import sqlite3

        store = client.app[STORE_KEY]
        await store._writer.run(lambda conn: conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit))
        return
    import asyncpg

    conn = await asyncpg.connect(store_url)
    try:
        await conn.execute(f"ALTER TABLE measurements ALTER COLUMN input TYPE varchar({limit})")
    finally:
        await conn.close()


async def test_a_row_the_store_refuses_costs_that_item_alone(client, store_url, sign, make_measurement,
                                                             registry) -> None:  # fmt: skip
    await narrow_the_store(client, store_url, 1500)
    first, second = make_measurement(), make_measurement()
    too_long = make_measurement(input="http://x.lab/" + "a" * 1600)
    seen: list[str] = []
    client.app[INGEST_HOOKS_KEY].append(lambda rows: seen.extend(r.measurement_uid for r in rows))
    response = await client.post(URL, json={"measurements": [sign(first), sign(too_long), sign(second)]})
    # Never a 503 for bad data: the agent would retry the batch forever.
    assert response.status == 200
    results = (await response.json())["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("accepted", None),
        ("rejected", "unstorable"),
        ("accepted", None),
    ]
    assert results[1]["measurement_uid"] == too_long.measurement_uid
    assert {r.measurement_uid for r in await stored(client)} == {
        first.measurement_uid,
        second.measurement_uid,
    }
    assert seen == [first.measurement_uid, second.measurement_uid]
    assert items_metric(registry, "rejected", "unstorable") == 1
    # Replaying the batch: the stored ones are duplicates, the bad one is refused again.
    results = await post(client, sign(first), sign(too_long), sign(second))
    assert [r["status"] for r in results] == ["duplicate", "rejected", "duplicate"]


# --- analysis errors -----------------------------------------------------------------------------------


async def test_an_analysis_failure_is_stored_without_a_verdict(client, sign, make_measurement, registry,
                                                               caplog) -> None:  # fmt: skip
    # An input the analysis cannot parse (an unbalanced "[" in the host), though the model accepts it.
    odd_input = "http://[127.77.0.99/"
    with pytest.raises(ValueError):  # precondition: if the analysis learns to judge it, pick another input
        analyse(odd_input, WebTestKeys(), None)
    m = make_measurement(input=odd_input)
    with caplog.at_level("ERROR", logger="gatewatch.collector.ingest"):
        results = await post(client, sign(m))
    # The collector's bug, not the agent's: accepted (a rejection would be quarantined by the agent forever).
    assert [(r["status"], r["reason"]) for r in results] == [("accepted", None)]
    (row,) = await stored(client)
    assert (row.blocking, row.anomaly, row.technique, row.fingerprint_key) == ("null", False, None, None)
    assert row.flags == ("analysis_error",)
    assert Verdict.model_validate_json(row.verdict_json).blocking is None
    assert row.payload == m.to_json_bytes()
    assert registry.get_sample_value("gatewatch_ingest_analysis_errors_total") == 1
    [record] = [r for r in caplog.records if r.getMessage() == "analysis failed"]
    assert record.measurement_uid == m.measurement_uid and record.error_type == "ValueError"
    line = JSONLineFormatter().format(record)  # as the collector writes it
    assert "ValueError" in json.loads(line)["exc"] and "127.77.0.99" not in line


# --- what the collector re-derives before judging --------------------------------------------------------


def hosting_geo(tmp_path: Path) -> Path:
    asn = tmp_path / "hosting-asn.csv"
    asn.write_text("127.80.0.0,127.80.255.255,64600,Lab Hosting\n127.90.0.0,127.90.255.255,64999,Elsewhere\n")
    return asn


def answered_keys(ip: str, *, bogon: bool, asn: int | None) -> WebTestKeys:
    """The resolver answered ``ip`` (the agent's own ``bogon``/``asn`` on it); the control resolved the name
    to 127.80.0.5 in AS64600."""
    control = ControlObservations(
        dns=ControlDNS(addrs=["127.80.0.5"], asns={"127.80.0.5": 64600}),
        tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
        http_request=ControlHTTP(status_code=200, body_length=100, title="x"),
    )
    answer = DNSAnswer(answer_type="A", ipv4=ip, bogon=bogon, asn=asn)
    cname = DNSAnswer(answer_type="CNAME", hostname="x.lab", bogon=True, asn=64600)
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab", query_type="A", t0=0.0, t=0.01,
                     rcode="NOERROR", answers=[cname, answer],
                     replies=[DNSReply(t=0.01, rcode="NOERROR", answers=[cname, answer])])  # fmt: skip
    return WebTestKeys(queries=[query], control=control)


async def test_agent_supplied_bogon_and_asn_are_recomputed(make_client, sign, make_measurement,
                                                           tmp_path) -> None:  # fmt: skip
    client = await make_client(asn_db=(hosting_geo(tmp_path),), control_allow_net=("127.0.0.0/8",))
    cases = {
        # a censor's private-range answer, passed off as public and in the site's network
        "hidden_bogon": (answered_keys("10.10.34.35", bogon=False, asn=64600), ("dns", "dns.bogon")),
        # the site's own network (real in this deployment: control_allow_net), passed off as a bogon
        "invented_bogon": (answered_keys("127.80.0.9", bogon=True, asn=None), ("null", None)),
        # another network's address, passed off as the site's ASN
        "forged_asn": (answered_keys("127.90.0.1", bogon=False, asn=64600), ("dns", "dns.inconsistent")),
    }
    measurements = {name: vouched(make_measurement(test_keys=keys)) for name, (keys, _) in cases.items()}
    assert {r["status"] for r in await post(client, *map(sign, measurements.values()))} == {"accepted"}
    rows = {r.measurement_uid: r for r in await stored(client)}
    for name, (_, expected) in cases.items():
        row = rows[measurements[name].measurement_uid]
        assert (row.blocking, row.technique) == expected, name
        assert row.payload == measurements[name].to_json_bytes()  # the signed bytes, claims and all
    invented = Verdict.model_validate_json(rows[measurements["invented_bogon"].measurement_uid].verdict_json)
    assert invented.layers[0].rule_id == "dns.consistent_asn"


async def test_without_a_geolocation_database_claimed_asns_are_dropped(
    make_client, sign, make_measurement
) -> None:
    client = await make_client(control_allow_net=("127.0.0.0/8",))
    m = make_measurement(test_keys=answered_keys("127.90.0.1", bogon=False, asn=64600))
    await post(client, sign(m))
    (row,) = await stored(client)
    assert (row.blocking, row.technique) == ("dns", "dns.inconsistent")


def test_rederiving_leaves_the_parsed_keys_alone() -> None:
    keys = answered_keys("10.10.34.35", bogon=False, asn=64600)
    before = keys.model_dump_json()
    derived = rederive_dns_answers(keys, ("127.0.0.0/8",), None)
    assert keys.model_dump_json() == before
    query = derived.queries[0]
    cname, answer = query.answers
    assert (cname.bogon, cname.asn, answer.bogon, answer.asn) == (False, None, True, None)
    assert query.replies[0].answers == query.answers

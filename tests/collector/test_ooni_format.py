"""The ``ooni`` export format (collector/ooni_format.py) on stored rows built from real measurement models,
and ``format=ooni`` from the real app's export endpoint."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatewatch.collector.app import create_app
from gatewatch.collector.exports import MEDIA_TYPES, export, judgement
from gatewatch.collector.ooni_format import GATEWATCH_KEY, ooni_measurement, report_id
from gatewatch.collector.settings import Settings
from gatewatch.collector.store.base import StoredMeasurement
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import (
    Certificate,
    DNSAnswer,
    DNSQuery,
    DNSReply,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
    TLSHandshake,
)
from gatewatch.core.verdicts import Fingerprint, Verdict

START = datetime(2026, 11, 23, 13, 40, 5, tzinfo=UTC)
DER = b"0\x82\x01\x00 not really a certificate"


def rich_keys() -> WebTestKeys:
    answer = DNSAnswer(answer_type="A", ipv4="10.10.34.35", ttl=60, bogon=True)
    return WebTestKeys(
        queries=[
            DNSQuery(
                resolver_address="192.0.2.53:53",
                hostname="example.org",
                query_type="A",
                t0=0.0,
                t=0.01,
                rcode="NOERROR",
                answers=[answer],
                replies=[
                    DNSReply(t=0.01, rcode="NOERROR", answers=[answer]),
                    DNSReply(t=0.05, rcode="NXDOMAIN"),
                ],
            ),
            DNSQuery(
                resolver_address="192.0.2.53:53",
                hostname="example.org",
                query_type="AAAA",
                t0=0.0,
                t=0.02,
                rcode="SERVFAIL",
                failure="dns_server_failure",
            ),
        ],
        tcp_connect=[
            TCPConnect(
                ip="10.10.34.35", port=443, t0=0.1, t=5.1, success=False, failure="generic_timeout_error"
            ),
            TCPConnect(ip="93.184.216.34", port=443, t0=0.1, t=0.2, success=True),
            TCPConnect(
                ip="2001:db8::1", port=443, t0=0.1, t=0.2, success=False, failure="connection_refused"
            ),
        ],
        tls_handshakes=[
            TLSHandshake(
                address="93.184.216.34:443",
                server_name="example.org",
                t0=0.2,
                t=0.4,
                tls_version="TLSv1.3",
                peer_certificates=[
                    Certificate(
                        subject="CN=example.org",
                        issuer="CN=Lab CA",
                        not_before="2026-01-01T00:00:00Z",
                        not_after="2027-01-01T00:00:00Z",
                        sha256="ab" * 32,
                        der_b64=base64.b64encode(DER).decode(),
                    ),
                    Certificate(  # minimised by the agent: no bytes, so nothing OONI's shape can hold
                        subject="CN=Lab CA",
                        issuer="CN=Lab CA",
                        not_before="2026-01-01T00:00:00Z",
                        not_after="2027-01-01T00:00:00Z",
                        sha256="cd" * 32,
                    ),
                ],
                validated=True,
            )
        ],
        requests=[
            HTTPTransaction(
                t0=0.4,
                t=0.5,
                address="93.184.216.34:443",
                transport="tls",
                request=HTTPRequest(url="https://example.org/", headers=[("Host", "example.org")]),
                response=HTTPResponse(
                    code=301, headers=[("Location", "https://www.example.org/"), ("Set-Cookie", "a=1")]
                ),
            ),
            HTTPTransaction(
                t0=0.5,
                t=0.7,
                transport="tls",
                request=HTTPRequest(url="https://www.example.org/"),
                response=HTTPResponse(
                    code=200,
                    headers=[("Vary", "a"), ("Vary", "b")],
                    body="<title>hi</title>",
                    body_length=17,
                ),
            ),
        ],
        control=ControlObservations(
            dns=ControlDNS(addrs=["93.184.216.34"]),
            tcp_connect={
                "10.10.34.35:443": ControlTCP(status=True),
                "[2001:db8::1]:443": ControlTCP(status=False),
            },
            http_request=ControlHTTP(status_code=200),
        ),
    )


def stored(blocking: str = "dns", keys: WebTestKeys | None = None) -> StoredMeasurement:
    verdict = (
        Verdict(
            blocking="dns",
            accessible=False,
            dns_consistency="inconsistent",
            fingerprint=Fingerprint(technique="dns.injection", stage="dns", injected_ips=["10.10.34.35"]),
        )
        if blocking == "dns"
        else Verdict(blocking=None, accessible=None)
        if blocking == "null"
        else Verdict(blocking=False, accessible=True, dns_consistency="consistent", status_code_match=True)
    )
    m = Measurement(
        measurement_start_time=START,
        test_start_time=START - timedelta(seconds=30),
        test_runtime=1.5,
        probe_asn="AS64501",
        probe_cc="KH",
        input="https://example.org/",
        annotations={"platform": "linux"},
        test_keys=keys or rich_keys(),
    )
    return StoredMeasurement(
        measurement_uid=m.measurement_uid,
        received_at=START + timedelta(minutes=5),
        measurement_start_time=START,
        probe_cc="KH",
        probe_asn="AS64501",
        test_name="web",
        input=m.input,
        domain="example.org",
        blocking=blocking,
        anomaly=blocking not in ("false", "null"),
        technique=verdict.fingerprint.technique if verdict.fingerprint else None,
        fingerprint_key=verdict.fingerprint.key if verdict.fingerprint else None,
        verdict_json=verdict.model_dump_json(),
        payload=m.to_json_bytes(),
        flags=("asn_mismatch",),
    )


def as_ooni(row: StoredMeasurement) -> dict[str, Any]:
    return ooni_measurement(row, judgement(row))


def test_base_keys() -> None:
    row = stored()
    doc = as_ooni(row)
    assert doc["test_name"] == "web_connectivity" and doc["data_format_version"] == "0.2.0"
    assert doc["measurement_start_time"] == "2026-11-23 13:40:05"
    assert doc["test_start_time"] == "2026-11-23 13:39:35"
    tail = row.measurement_uid.replace("-", "")[-16:]
    assert doc["report_id"] == report_id(row, {}) == f"20261123T134005Z_webconnectivity_KH_64501_n1_{tail}"
    assert "probe_ip" not in doc and "resolver_ip" not in doc


@pytest.mark.parametrize(
    ("blocking", "value", "accessible"), [("dns", "dns", False), ("false", False, True), ("null", None, None)]
)
def test_verdict_keys_are_the_servers_at_the_top_of_test_keys(
    blocking: str, value: Any, accessible: Any
) -> None:
    keys = as_ooni(stored(blocking))["test_keys"]
    assert (keys["blocking"], keys["accessible"]) == (value, accessible)
    assert keys[GATEWATCH_KEY]["analysis"]["blocking"] == value
    assert keys[GATEWATCH_KEY]["analysis"]["flags"] == ["asn_mismatch"]


def test_dns_tcp_tls_http_shapes() -> None:
    keys = as_ooni(stored())["test_keys"]
    assert [q["rcode"] for q in keys["queries"]] == [0, 2]
    assert keys["queries"][0]["answers"] == [
        {"answer_type": "A", "ipv4": "10.10.34.35", "ipv6": None, "hostname": None, "ttl": 60, "asn": None}
    ]
    assert keys["dns_experiment_failure"] is None  # one query answered
    # blocked: failed here and reachable from the control; not blocked: failed for the control too
    assert [c["status"] for c in keys["tcp_connect"]] == [
        {"success": False, "failure": "generic_timeout_error", "blocked": True},
        {"success": True, "failure": None, "blocked": False},
        {"success": False, "failure": "connection_refused", "blocked": False},
    ]
    (handshake,) = keys["tls_handshakes"]
    assert handshake["peer_certificates"] == [{"data": base64.b64encode(DER).decode(), "format": "base64"}]
    assert [c["sha256"] for c in keys[GATEWATCH_KEY]["tls_handshakes"][0]["peer_certificates"]] == [
        "ab" * 32,
        "cd" * 32,
    ]
    # the last hop first, as Web Connectivity lists requests
    assert [r["request"]["url"] for r in keys["requests"]] == [
        "https://www.example.org/",
        "https://example.org/",
    ]
    final = keys["requests"][0]["response"]
    assert final["headers"] == {"Vary": "a"} and final["headers_list"] == [["Vary", "a"], ["Vary", "b"]]
    assert keys["requests"][1]["request"]["headers"] == {"Host": "example.org"}
    assert [len(q["replies"]) for q in keys[GATEWATCH_KEY]["queries"]] == [2, 0]


def test_an_empty_measurement_is_still_web_connectivity() -> None:
    keys = as_ooni(stored("null", WebTestKeys()))["test_keys"]
    assert keys["queries"] == keys["tcp_connect"] == keys["tls_handshakes"] == keys["requests"] == []
    assert keys["control"] is None and keys["blocking"] is None


async def test_oonidata_loads_every_shape() -> None:
    nettests = pytest.importorskip("oonidata.models.nettests", reason="oonidata is not installed")
    for row in (stored("dns"), stored("false"), stored("null", WebTestKeys())):
        doc = json.loads(b"".join([chunk async for chunk in export("ooni", _rows([row]))]))
        loaded = nettests.NETTEST_MODELS[doc["test_name"]].from_dict(doc)
        assert isinstance(loaded, nettests.WebConnectivity)
        assert loaded.test_keys.blocking == doc["test_keys"]["blocking"]


async def _rows(rows: list[StoredMeasurement]) -> Any:
    for row in rows:
        yield row


async def test_the_api_serves_format_ooni(
    aiohttp_client: Any, tmp_path: Any, make_measurement: Any, sign: Any
) -> None:
    client = await aiohttp_client(
        create_app(Settings(db=f"sqlite:///{tmp_path / 'db.sqlite'}", accept_identified=True))
    )
    made = [make_measurement(), make_measurement(probe_cc="KH")]
    response = await client.post("/api/v1/measurements", json={"measurements": [sign(m) for m in made]})
    assert response.status == 200
    response = await client.get("/api/v1/measurements/export", params={"format": "ooni"})
    assert response.status == 200
    assert response.headers["Content-Type"] == MEDIA_TYPES["ooni"]
    assert response.headers["Content-Disposition"].endswith('.ooni.jsonl"')
    docs = [json.loads(line) for line in (await response.read()).splitlines()]
    assert {d["measurement_uid"] for d in docs} == {m.measurement_uid for m in made}
    assert {d["test_name"] for d in docs} == {"web_connectivity"}
    bad = await client.get("/api/v1/measurements/export", params={"format": "oni"})
    assert bad.status == 400 and "ooni" in (await bad.json())["detail"]

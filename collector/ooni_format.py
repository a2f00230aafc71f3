"""The ``ooni`` export format: a stored measurement as an OONI Web Connectivity measurement.

gatewatch's native measurement already follows OONI's base format (df-000) but keeps gatewatch's own
shapes inside ``test_keys``. This module rewrites one stored row into the shapes of OONI's data formats so
that OONI's own tools (``oonidata``'s ``load_measurement``, the pipeline's parsers) read it as
``web_connectivity``:

- df-000 base: ``report_id`` (derived from the measurement's uid), ``test_name: "web_connectivity"``,
  ``data_format_version``; no ``probe_ip`` and no resolver address at all (gatewatch never has them).
- df-002 DNS: ``rcode`` as the integer of RFC 1035/6895, answers unchanged (they already follow df-002).
- df-005 TCP connect: ``status {success, failure, blocked}`` (``blocked``: failed here, succeeded from the
  control, as Web Connectivity sets it).
- df-006 TLS: ``peer_certificates`` as ``{data, format: "base64"}`` (DER), leaf first.
- df-001 HTTP: ``headers`` as a dict (the first value of each name) plus ``headers_list``; requests most
  recent first, as Web Connectivity lists them.
- ts-017 Web Connectivity: ``blocking``, ``accessible``, ``dns_consistency``, the ``*_match`` keys and the
  ``*_failure`` keys at the top of ``test_keys``, from the **server's** verdict (not the agent's).

What OONI's format has no place for (the full verdict with its per-layer rules and fingerprint, every DNS
reply, certificate details, packet evidence, the collector's flags) is kept under one extra key,
``test_keys.gatewatch`` (:data:`GATEWATCH_KEY`), which OONI's readers ignore.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, NamedTuple

from gatewatch.core.measurement import ooni_time
from gatewatch.core.vocabulary import blocking_value

from .store.base import StoredMeasurement

__all__ = [
    "DATA_FORMAT_VERSION",
    "DNS_RCODES",
    "GATEWATCH_KEY",
    "OONI_TEST_NAME",
    "RowFacts",
    "endpoint",
    "judgement_keys",
    "ooni_document_of",
    "ooni_measurement",
    "report_id",
]

OONI_TEST_NAME: Final = "web_connectivity"
DATA_FORMAT_VERSION: Final = "0.2.0"  # df-000's current version
GATEWATCH_KEY: Final = "gatewatch"  # test_keys' extra key: everything OONI's format has no place for
# DNS response codes (RFC 1035 §4.1.1, RFC 6895): OONI stores the number, gatewatch the mnemonic.
DNS_RCODES: Final[dict[str, int]] = {
    "NOERROR": 0,
    "FORMERR": 1,
    "SERVFAIL": 2,
    "NXDOMAIN": 3,
    "NOTIMP": 4,
    "REFUSED": 5,
    "YXDOMAIN": 6,
    "YXRRSET": 7,
    "NXRRSET": 8,
    "NOTAUTH": 9,
    "NOTZONE": 10,
}


def endpoint(ip: str, port: int) -> str:
    """``ip:port`` as OONI's control keys it (``[ip]:port`` for IPv6)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def report_id(row: StoredMeasurement, payload: dict[str, Any]) -> str:
    """An OONI-shaped report id (``YYYYMMDDThhmmssZ_webconnectivity_CC_ASN_n1_<16 hex>``), stable for a
    measurement: its tail is the uid's random part, so it identifies nothing the uid does not."""
    started = row.measurement_start_time.strftime("%Y%m%dT%H%M%SZ")
    return _report_id(started, row.probe_cc, row.probe_asn, row.measurement_uid)


def _report_id(started: str, probe_cc: str, probe_asn: str, uid: str) -> str:
    asn = probe_asn[2:] if probe_asn.startswith("AS") else "0"
    return f"{started}_webconnectivity_{probe_cc}_{asn}_n1_{uid.replace('-', '')[-16:]}"


def _rcode(text: Any) -> int | None:
    return DNS_RCODES.get(text) if isinstance(text, str) else None


def _query(query: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One df-002 query, and what gatewatch keeps beside it."""
    resolver = str(query.get("resolver_address") or "")
    host, _, port = resolver.rpartition(":")
    doc = {
        "engine": query.get("engine"),
        "failure": query.get("failure"),
        "hostname": query.get("hostname"),
        "query_type": query.get("query_type"),
        "resolver_address": resolver or None,
        "resolver_hostname": None,
        "resolver_port": port or None,
        "answers": [
            {k: v for k, v in answer.items() if k != "bogon"} for answer in query.get("answers") or []
        ],
        "rcode": _rcode(query.get("rcode")),
        "t0": query.get("t0"),
        "t": query.get("t"),
    }
    if not host:
        doc["resolver_port"] = None
    extra = {
        "rcode": query.get("rcode"),
        "replies": query.get("replies") or [],
        "truncated_retry_over_tcp": query.get("truncated_retry_over_tcp", False),
        "bogons": [bool(a.get("bogon")) for a in query.get("answers") or []],
    }
    return doc, extra


def _tcp_connect(connect: dict[str, Any], control: dict[str, Any] | None) -> dict[str, Any]:
    success = bool(connect.get("success"))
    key = endpoint(str(connect.get("ip")), int(connect.get("port") or 0))
    control_status = ((control or {}).get("tcp_connect") or {}).get(key)
    blocked: bool | None = None
    if success:
        blocked = False
    elif isinstance(control_status, dict) and control_status.get("status") is not None:
        blocked = bool(control_status["status"])
    return {
        "ip": connect.get("ip"),
        "port": connect.get("port"),
        "status": {"success": success, "failure": connect.get("failure"), "blocked": blocked},
        "t0": connect.get("t0"),
        "t": connect.get("t"),
    }


def _tls_handshake(handshake: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    certificates = handshake.get("peer_certificates") or []
    doc = {
        "network": "tcp",
        "address": handshake.get("address"),
        "server_name": handshake.get("server_name"),
        "failure": handshake.get("failure"),
        "tls_version": handshake.get("tls_version"),
        "cipher_suite": handshake.get("cipher_suite"),
        "negotiated_protocol": handshake.get("negotiated_protocol"),
        # gatewatch records the chain's validation outcome as the handshake's failure, as a verifying
        # handshake reports it: to OONI's readers this is a verified handshake.
        "no_tls_verify": False,
        "peer_certificates": [
            {"data": cert["der_b64"], "format": "base64"} for cert in certificates if cert.get("der_b64")
        ],
        "t0": handshake.get("t0"),
        "t": handshake.get("t"),
    }
    extra = {
        "validated": handshake.get("validated", False),
        "failure_stage": handshake.get("failure_stage"),
        "peer_certificates": [{k: v for k, v in c.items() if k != "der_b64"} for c in certificates],
    }
    return doc, extra


def _headers(pairs: Any) -> tuple[dict[str, str], list[list[str]]]:
    as_list = [[str(name), str(value)] for name, value in pairs or []]
    as_dict: dict[str, str] = {}
    for name, value in as_list:
        as_dict.setdefault(name, value)  # OONI's dict keeps one value per name: the first
    return as_dict, as_list


def _request(transaction: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    request = transaction.get("request") or {}
    request_headers, request_list = _headers(request.get("headers"))
    doc: dict[str, Any] = {
        "network": "tcp",
        "address": transaction.get("address"),
        "alpn": None,
        "failure": transaction.get("failure"),
        "request": {
            "method": request.get("method", "GET"),
            "url": request.get("url", ""),
            "headers": request_headers,
            "headers_list": request_list,
            "body": "",
            "body_is_truncated": False,
            "tor": {"is_tor": False, "exit_ip": None, "exit_name": None},
            "x_transport": transaction.get("transport", "tcp"),
        },
        "response": None,
        "t0": transaction.get("t0"),
        "t": transaction.get("t"),
    }
    extra: dict[str, Any] = {}
    response = transaction.get("response")
    if isinstance(response, dict):
        response_headers, response_list = _headers(response.get("headers"))
        doc["response"] = {
            "code": response.get("code"),
            "headers": response_headers,
            "headers_list": response_list,
            "body": response.get("body"),
            "body_is_truncated": bool(response.get("body_is_truncated")),
        }
        extra = {k: response.get(k) for k in ("body_length", "body_sha256", "title")}
    return doc, extra


def judgement_keys(stored_blocking: str, verdict: Any) -> dict[str, Any]:
    """ts-017's verdict keys, from the server's verdict (blocking from the stored column, the truth)."""
    try:
        blocking = blocking_value(stored_blocking)
    except ValueError:  # written by another version of the collector: no verdict OONI could read
        blocking = None
    accessible = None if blocking is None else blocking is False
    judged = verdict if isinstance(verdict, dict) else {}
    return {
        "blocking": blocking,
        "accessible": accessible,
        "dns_consistency": judged.get("dns_consistency"),
        "body_length_match": judged.get("body_length_match"),
        "status_code_match": judged.get("status_code_match"),
        "headers_match": judged.get("headers_match"),
        "title_match": judged.get("title_match"),
    }


def _experiment_failures(queries: list[Any], requests: list[Any]) -> dict[str, Any]:
    dns_failure = None
    if queries and not any(q.get("answers") for q in queries):
        dns_failure = next((q.get("failure") for q in queries if q.get("failure")), None)
    http_failure = requests[-1].get("failure") if requests else None
    return {"dns_experiment_failure": dns_failure, "http_experiment_failure": http_failure}


class RowFacts(NamedTuple):
    """What the OONI document takes from a stored row's columns besides its payload (times as text:
    ``start`` in OONI's form, ``started`` as :func:`report_id` writes it)."""

    measurement_uid: str
    input: str
    probe_cc: str
    probe_asn: str
    start: str
    started: str


def ooni_measurement(row: StoredMeasurement, analysis: dict[str, Any]) -> dict[str, Any]:
    """One stored row as an OONI Web Connectivity measurement. ``analysis`` is the server's judgement as the
    other exports publish it (:func:`gatewatch.collector.exports.judgement`), kept under the extra key."""
    facts = RowFacts(
        row.measurement_uid,
        row.input,
        row.probe_cc,
        row.probe_asn,
        ooni_time(row.measurement_start_time),
        row.measurement_start_time.strftime("%Y%m%dT%H%M%SZ"),
    )
    return ooni_document_of(
        json.loads(row.payload), facts, analysis, judgement_keys(row.blocking, analysis.get("verdict"))
    )


def ooni_document_of(
    payload: dict[str, Any], facts: RowFacts, analysis: Any, judged: dict[str, Any]
) -> dict[str, Any]:
    """:func:`ooni_measurement` from the decoded payload, the row's other columns, ``analysis`` (or what
    stands for it until it is spliced in: export_lines.py) and :func:`judgement_keys` of the row."""
    keys = payload.get("test_keys") or {}
    control = keys.get("control") if isinstance(keys.get("control"), dict) else None
    queries = [q for q in keys.get("queries") or [] if isinstance(q, dict)]
    connects = [c for c in keys.get("tcp_connect") or [] if isinstance(c, dict)]
    handshakes = [h for h in keys.get("tls_handshakes") or [] if isinstance(h, dict)]
    requests = [r for r in keys.get("requests") or [] if isinstance(r, dict)]
    ooni_queries, query_extras = zip(*map(_query, queries), strict=True) if queries else ((), ())
    ooni_tls, tls_extras = zip(*map(_tls_handshake, handshakes), strict=True) if handshakes else ((), ())
    ooni_requests, request_extras = zip(*map(_request, requests), strict=True) if requests else ((), ())
    test_keys: dict[str, Any] = {
        **judged,
        **_experiment_failures(queries, requests),
        "control_failure": keys.get("control_failure"),
        "control": control,
        "queries": list(ooni_queries),
        "tcp_connect": [_tcp_connect(c, control) for c in connects],
        "tls_handshakes": list(ooni_tls),
        "requests": list(reversed(ooni_requests)),  # Web Connectivity lists the last hop first
        GATEWATCH_KEY: {
            "test_name": payload.get("test_name"),
            "analysis": analysis,
            "agent_verdict": keys.get("verdict"),
            "queries": list(query_extras),  # in the order of test_keys.queries
            "tls_handshakes": list(tls_extras),  # likewise
            "requests": list(request_extras),  # in the agent's order (first hop first)
            "packet_traces": keys.get("packet_traces") or [],
        },
    }
    return {
        "annotations": payload.get("annotations") or {},
        "data_format_version": DATA_FORMAT_VERSION,
        "input": facts.input,
        "measurement_start_time": facts.start,
        "measurement_uid": facts.measurement_uid,
        "probe_asn": facts.probe_asn,
        "probe_cc": facts.probe_cc,
        "probe_network_name": payload.get("probe_network_name") or "",
        "report_id": _report_id(facts.started, facts.probe_cc, facts.probe_asn, facts.measurement_uid),
        "resolver_asn": payload.get("resolver_asn"),
        "software_name": payload.get("software_name"),
        "software_version": payload.get("software_version"),
        "test_keys": test_keys,
        "test_name": OONI_TEST_NAME,
        "test_runtime": payload.get("test_runtime"),
        "test_start_time": _test_start_time(payload.get("test_start_time"), facts.start),
        "test_version": payload.get("test_version"),
    }


def _test_start_time(text: Any, start: str) -> str:
    if isinstance(text, str):
        return _ooni_start(text) or start
    return start


@lru_cache(maxsize=4096)
def _ooni_start(text: str) -> str | None:
    """A payload's test start time in OONI's form, or None where it is not a time."""
    try:
        return ooni_time(datetime.fromisoformat(text))
    except ValueError:  # also TimeOutOfRange
        return None

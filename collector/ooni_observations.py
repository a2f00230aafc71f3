"""OONI's observation shapes (df-001 HTTP, df-002 DNS, df-005 TCP, df-006 TLS, ts-017's control) read back
into gatewatch's observation models: the inverse of :mod:`.ooni_format`, for ``import-ooni``.

Each reader takes one OONI entry (a dict parsed from JSON, of any shape) and returns the gatewatch model, or
``None`` when the entry has no place in gatewatch's model (a DNS query type gatewatch does not ask, an
HTTP transaction without a URL): one odd entry drops that entry, never the measurement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final

from cryptography import x509
from pydantic import ValidationError

from gatewatch.core.control import ControlObservations
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
from gatewatch.probes.http import extract_title

from .ooni_format import DNS_RCODES

__all__ = ["control", "dicts", "dns_query", "http_transaction", "seconds", "tcp_connect", "tls_handshake"]

_RCODE_NAMES: Final = {number: name for name, number in DNS_RCODES.items()}


def dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def seconds(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _text(value: Any) -> str | None:
    """OONI's MaybeBinaryData: a string, or ``{"format": "base64", "data": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("format") == "base64" and isinstance(value.get("data"), str):
        try:
            return base64.b64decode(value["data"]).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
    return None


def _answer(answer: dict[str, Any]) -> DNSAnswer | None:
    if answer.get("answer_type") not in ("A", "AAAA", "CNAME"):
        return None
    fields = {k: answer.get(k) for k in ("answer_type", "ipv4", "ipv6", "hostname", "ttl", "asn")}
    try:
        return DNSAnswer.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError:
        return None


def _replies(extra: Any) -> list[DNSReply]:
    """Every reply of a query, from a gatewatch export's extra key (OONI's format keeps only the first:
    an on-path injector's second reply, gatewatch's ``dns.injection`` evidence, has no place in it)."""
    replies = []
    for reply in dicts(extra.get("replies") if isinstance(extra, dict) else None):
        try:
            replies.append(DNSReply.model_validate(reply))
        except ValidationError:
            continue
    return replies


def dns_query(query: dict[str, Any], extra: Any = None) -> DNSQuery | None:
    """One df-002 query; ``extra`` is its entry in ``test_keys.gatewatch.queries`` when the file is a
    gatewatch ``ooni`` export (every reply received), None for OONI's own data."""
    if query.get("query_type") not in ("A", "AAAA") or not isinstance(query.get("hostname"), str):
        return None  # gatewatch asks A and AAAA only; OONI's other types have no place here
    engine = query.get("engine")
    rcode = query.get("rcode")
    answers = [a for a in map(_answer, dicts(query.get("answers"))) if a is not None]
    return DNSQuery(
        engine=engine if engine in ("udp", "tcp") else "system",  # getaddrinfo, system, doh, dot, ...
        resolver_address=str(query.get("resolver_address") or ""),
        hostname=query["hostname"],
        query_type=query["query_type"],
        t0=seconds(query.get("t0")),
        t=seconds(query.get("t")),
        failure=query.get("failure") if isinstance(query.get("failure"), str) else None,
        rcode=_RCODE_NAMES.get(rcode, str(rcode)) if isinstance(rcode, int) else None,
        answers=answers,
        replies=_replies(extra),
        truncated_retry_over_tcp=isinstance(extra, dict) and extra.get("truncated_retry_over_tcp") is True,
    )


def tcp_connect(connect: dict[str, Any]) -> TCPConnect | None:
    status = connect.get("status") if isinstance(connect.get("status"), dict) else {}
    try:
        return TCPConnect(
            ip=str(connect["ip"]),
            port=int(connect["port"]),
            t0=seconds(connect.get("t0")),
            t=seconds(connect.get("t")),
            success=bool(status.get("success")),
            failure=status.get("failure") if isinstance(status.get("failure"), str) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _certificate(entry: Any) -> Certificate | None:
    data = _binary(entry)
    if data is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(data)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        return Certificate(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=names,
            not_before=cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            not_after=cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            sha256=hashlib.sha256(data).hexdigest(),
            der_b64=base64.b64encode(data).decode(),
        )
    except (ValueError, TypeError):
        return None


def _binary(entry: Any) -> bytes | None:
    if isinstance(entry, dict) and entry.get("format") == "base64" and isinstance(entry.get("data"), str):
        try:
            return base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def tls_handshake(handshake: dict[str, Any]) -> TLSHandshake | None:
    failure = handshake.get("failure") if isinstance(handshake.get("failure"), str) else None
    certificates = [c for c in map(_certificate, handshake.get("peer_certificates") or []) if c is not None]
    try:
        return TLSHandshake(
            address=str(handshake.get("address") or ""),
            server_name=str(handshake.get("server_name") or ""),
            t0=seconds(handshake.get("t0")),
            t=seconds(handshake.get("t")),
            failure=failure,
            tls_version=handshake.get("tls_version") or None,
            cipher_suite=handshake.get("cipher_suite") or None,
            negotiated_protocol=handshake.get("negotiated_protocol") or None,
            peer_certificates=certificates,
            # OONI's probes verify the chain unless told not to: a verified handshake that succeeded.
            validated=failure is None and not handshake.get("no_tls_verify"),
        )
    except ValidationError:
        return None


def _headers(part: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = part.get("headers_list")
    if isinstance(pairs, list) and pairs:
        out = []
        for pair in pairs:
            if isinstance(pair, list) and len(pair) == 2:
                name, value = _text(pair[0]), _text(pair[1])
                if name is not None and value is not None:
                    out.append((name, value))
        return out
    headers = part.get("headers")
    if isinstance(headers, dict):
        return [(str(k), v) for k, v in headers.items() if isinstance(v, str)]
    return []


def http_transaction(entry: dict[str, Any]) -> HTTPTransaction | None:
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    url = request.get("url")
    if not isinstance(url, str) or not url:
        return None
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    parsed_response = None
    if isinstance(response.get("code"), int) and response.get("code"):
        body = _text(response.get("body"))
        body_bytes = _binary(response.get("body")) or (body or "").encode("utf-8", "replace")
        parsed_response = HTTPResponse(
            code=response["code"],
            headers=_headers(response),
            body=body,
            body_is_truncated=bool(response.get("body_is_truncated")),
            body_length=len(body_bytes),
            body_sha256=hashlib.sha256(body_bytes).hexdigest() if body is not None else None,
            title=extract_title(body_bytes) if body is not None else None,
        )
    return HTTPTransaction(
        t0=seconds(entry.get("t0")),
        t=seconds(entry.get("t")),
        address=entry.get("address") if isinstance(entry.get("address"), str) else None,
        transport="tls" if url.lower().startswith("https:") else "tcp",
        request=HTTPRequest(method=str(request.get("method") or "GET"), url=url, headers=_headers(request)),
        response=parsed_response,
        failure=entry.get("failure") if isinstance(entry.get("failure"), str) else None,
    )


def _statuses(entries: Any, *extra: str) -> dict[str, dict[str, Any]]:
    """OONI's control ``{"ip:port": {status, failure, ...}}`` keeping what gatewatch's control holds."""
    if not isinstance(entries, dict):
        return {}
    return {
        str(key): {"status": bool(v.get("status")), "failure": v.get("failure")}
        | {name: v.get(name) or "" for name in extra}
        for key, v in entries.items()
        if isinstance(v, dict)
    }


def _control_http(http: dict[str, Any]) -> dict[str, Any]:
    shaped = {
        k: http.get(k) for k in ("failure", "status_code", "title", "body_length") if http.get(k) is not None
    }
    if isinstance(shaped.get("status_code"), int) and shaped["status_code"] < 0:
        del shaped["status_code"]  # OONI's test helper writes -1 when its fetch failed
    headers = http.get("headers") if isinstance(http.get("headers"), dict) else {}
    return shaped | {"headers": {k: v for k, v in headers.items() if isinstance(v, str)}}


def control(keys: dict[str, Any]) -> ControlObservations | None:
    """``test_keys.control`` as gatewatch's control (None when absent or unreadable)."""
    control = keys.get("control")
    if not isinstance(control, dict) or not isinstance(control.get("dns"), dict):
        return None
    http = control.get("http_request") if isinstance(control.get("http_request"), dict) else {}
    shaped = {
        "dns": {"failure": control["dns"].get("failure"), "addrs": control["dns"].get("addrs") or []},
        "tcp_connect": _statuses(control.get("tcp_connect")),
        "tls_handshake": _statuses(control.get("tls_handshake"), "server_name"),
        "http_request": _control_http(http),
    }
    try:
        return ControlObservations.model_validate(shaped)
    except ValidationError:
        return None

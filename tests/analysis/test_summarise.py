"""summarise(): a measurement from the clean vantage point, in the control's shape."""

from __future__ import annotations

import hashlib

from gatewatch.analysis import summarise
from gatewatch.core.control import ControlDNS, ControlObservations, ControlTCP, ControlTLS
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import (
    DNSAnswer,
    DNSQuery,
    DNSReply,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
    TLSHandshake,
)

HOST = "news.example.org"
V4, V4B, V6 = "198.51.100.20", "198.51.100.21", "2001:db8::20"
BODY = b"<html><head><title>News of the World Today</title></head><body>hello</body></html>"


def _query(host: str, qtype: str, answers: list[DNSAnswer], failure: str | None = None) -> DNSQuery:
    rcode = "NXDOMAIN" if failure == "dns_nxdomain_error" else "NOERROR"
    return DNSQuery(
        resolver_address="198.51.100.53:53",
        hostname=host,
        query_type=qtype,  # type: ignore[arg-type]
        t0=0.0,
        t=0.01,
        failure=failure,
        rcode=rcode,
        answers=answers,
        replies=[DNSReply(t=0.01, rcode=rcode, answers=answers)],
    )


def _hop(
    url: str, code: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> HTTPTransaction:
    return HTTPTransaction(
        t0=0.3,
        t=0.4,
        address=f"{V4}:443",
        transport="tls",
        request=HTTPRequest(url=url),
        response=HTTPResponse(
            code=code,
            headers=headers or [],
            body=body.decode(),
            body_length=len(body),
            body_sha256=hashlib.sha256(body).hexdigest(),
            title="News of the World Today" if body else None,
        ),
    )


def _clean_https() -> WebTestKeys:
    return WebTestKeys(
        queries=[
            _query(
                HOST,
                "A",
                [
                    DNSAnswer(answer_type="CNAME", hostname="edge.example.net"),
                    DNSAnswer(answer_type="A", ipv4=V4, asn=64600),
                    DNSAnswer(answer_type="A", ipv4=V4B),
                ],
            ),
            _query(HOST, "AAAA", [DNSAnswer(answer_type="AAAA", ipv6=V6)]),
            # A redirect's host: not the URL's, so not part of the control's DNS.
            _query("www.example.org", "A", [DNSAnswer(answer_type="A", ipv4="203.0.113.5")]),
        ],
        tcp_connect=[
            TCPConnect(ip=V4, port=443, t0=0.1, t=0.2, success=True),
            TCPConnect(ip=V4B, port=443, t0=0.1, t=0.2, success=False, failure="connection_refused"),
            TCPConnect(ip=V6, port=443, t0=0.1, t=0.2, success=False, failure="network_unreachable"),
        ],
        tls_handshakes=[
            TLSHandshake(
                address=f"{V4}:443", server_name=HOST, t0=0.2, t=0.3, tls_version="TLSv1.3", validated=True
            ),
        ],
        requests=[
            _hop(f"https://{HOST}/", 301, headers=[("Location", f"https://{HOST}/home")]),
            _hop(
                f"https://{HOST}/home",
                200,
                BODY,
                [("Content-Type", "text/html"), ("X-Served-By", "cache-1"), ("X-Served-By", "cache-2")],
            ),
        ],
    )


def test_a_clean_https_measurement() -> None:
    asns = {V4: 64601, V6: 64602}
    control = summarise(_clean_https(), asns.get)
    assert control.dns == ControlDNS(addrs=[V4, V4B, V6], asns={V4: 64601, V6: 64602})
    assert control.tcp_connect == {
        f"{V4}:443": ControlTCP(status=True),
        f"{V4B}:443": ControlTCP(status=False, failure="connection_refused"),
        f"[{V6}]:443": ControlTCP(status=False, failure="network_unreachable"),
    }
    assert control.tls_handshake == {f"{V4}:443": ControlTLS(server_name=HOST, status=True)}
    http = control.http_request
    assert http.failure is None
    assert http.status_code == 200  # the final hop, after the redirect
    assert http.headers == {"Content-Type": "text/html", "X-Served-By": "cache-1"}
    assert http.title == "News of the World Today"
    assert http.body_length == len(BODY)
    assert http.body_sha256 == hashlib.sha256(BODY).hexdigest()
    assert http.body_is_truncated is False
    # It survives the trip through JSON (the control endpoint's answer).
    assert ControlObservations.model_validate_json(control.model_dump_json()) == control


def test_asns_fall_back_to_the_answers() -> None:
    control = summarise(_clean_https())
    assert control.dns.asns == {V4: 64600}
    assert summarise(_clean_https(), lambda ip: None).dns.asns == {V4: 64600}


def test_nxdomain() -> None:
    keys = WebTestKeys(
        queries=[
            _query(HOST, "AAAA", [], failure="dns_nxdomain_error"),
            _query(HOST, "A", [], failure="dns_nxdomain_error"),
        ]
    )
    control = summarise(keys)
    assert control.dns == ControlDNS(failure="dns_nxdomain_error")
    assert control.tcp_connect == {} and control.tls_handshake == {}
    assert control.http_request.failure == "dns_nxdomain_error"
    assert control.http_request.status_code is None


def test_nothing_fetched_because_tls_failed() -> None:
    keys = _clean_https().model_copy(
        update={
            "tls_handshakes": [
                TLSHandshake(
                    address=f"{V4}:443",
                    server_name=HOST,
                    t0=0.2,
                    t=0.3,
                    failure="ssl_invalid_hostname",
                    failure_stage="during_handshake",
                )
            ],
            "requests": [],
        }
    )
    control = summarise(keys)
    assert control.tls_handshake[f"{V4}:443"] == ControlTLS(
        server_name=HOST, status=False, failure="ssl_invalid_hostname"
    )
    assert control.http_request.failure == "ssl_invalid_hostname"


def test_final_request_failed() -> None:
    keys = _clean_https()
    failed = keys.requests[-1].model_copy(update={"response": None, "failure": "generic_timeout_error"})
    control = summarise(keys.model_copy(update={"requests": [keys.requests[0], failed]}))
    assert control.http_request.failure == "generic_timeout_error"
    assert control.http_request.status_code is None


def test_an_ip_literal_has_no_dns() -> None:
    keys = WebTestKeys(tcp_connect=[TCPConnect(ip=V4, port=80, t0=0.0, t=0.1, success=True)])
    control = summarise(keys)
    assert control.dns == ControlDNS()
    assert control.tcp_connect == {f"{V4}:80": ControlTCP(status=True)}


def test_one_success_per_endpoint_is_enough() -> None:
    keys = WebTestKeys(
        tcp_connect=[
            TCPConnect(ip=V4, port=80, t0=0.0, t=0.1, success=False, failure="generic_timeout_error"),
            TCPConnect(ip=V4, port=80, t0=0.2, t=0.3, success=True),
        ]
    )
    assert summarise(keys).tcp_connect == {f"{V4}:80": ControlTCP(status=True)}

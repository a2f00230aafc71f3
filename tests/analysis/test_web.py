"""analyse(): hand-built measurements and controls, one per situation, with the verdict each must get.

Addresses are documentation ranges (198.51.100.0/24, 203.0.113.0/24) used as data only: nothing here
opens a socket. Controls are built by summarise() from a clean measurement, as the collector does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gatewatch.analysis import RULES, FingerprintDB, analyse, summarise
from gatewatch.analysis.fingerprints import parse_csv
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations
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
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import TECHNIQUES

HOST = "www.example.org"
SITE_IPS = ("198.51.100.10", "198.51.100.11")
SITE_ASN = 64600
OTHER_IP = "203.0.113.9"  # a public-looking address in another AS: a redirect to the censor's server
FORGED_IP = "203.0.113.66"
BOGON_IP = "10.10.34.35"
RESOLVER = "198.51.100.53:53"

PAGE = (
    "<html><head><title>Example Domain for Documentation</title></head><body>" + "x" * 2000 + "</body></html>"
)
SITE_HEADERS = [("Content-Type", "text/html"), ("Server", "ECS"), ("X-Cache", "HIT"), ("Date", "today")]
BLOCKPAGE = "<html><head><title>Access Denied</title></head><body>Gatewatch test blockpage 42</body></html>"
BLOCK_HEADERS = [("Content-Type", "text/html"), ("Server", "censor")]

FINGERPRINTS_CSV = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,"
    "source,exp_url,notes\n"
    "test.blockpage,nat,,body,contains,Gatewatch test blockpage,5,XL,tests,,\n"
    "test.redirect,isp,,header.location,prefix,http://blocked.example.net/,5,XL,tests,,\n"
    "test.vague,vbw,,body,contains,Access Denied,8,,tests,,\n"
    "test.benign,fp,,body,contains,Documentation</title>,5,,tests,,\n"
)
DNS_FINGERPRINTS_CSV = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,"
    "source,exp_url,notes\n"
    f"test.dns_block,nat,,dns,full,{OTHER_IP},5,XL,tests,,\n"
)


def _fingerprints() -> FingerprintDB:
    http, bad_http = parse_csv(FINGERPRINTS_CSV, "http")
    dns, bad_dns = parse_csv(DNS_FINGERPRINTS_CSV, "dns")
    assert not bad_http and not bad_dns
    return FingerprintDB(http, dns)


FINGERPRINTS = _fingerprints()


# ------------------------------------------------------------------------------------------- builders


def answer(ip: str, asn: int | None = None, bogon: bool = False) -> DNSAnswer:
    kind = "AAAA" if ":" in ip else "A"
    return DNSAnswer(
        answer_type=kind, ipv4=None if ":" in ip else ip, ipv6=ip if ":" in ip else None, asn=asn, bogon=bogon
    )


def reply(*ips: str, rcode: str = "NOERROR", t: float = 0.01, asn: int | None = None) -> DNSReply:
    return DNSReply(t=t, rcode=rcode, answers=[answer(ip, asn) for ip in ips])


def query(
    ips: tuple[str, ...] = SITE_IPS,
    *,
    host: str = HOST,
    qtype: str = "A",
    failure: str | None = None,
    rcode: str = "NOERROR",
    replies: list[DNSReply] | None = None,
    asn: int | None = None,
    bogon: bool = False,
) -> DNSQuery:
    first = replies[0] if replies else None
    answers = list(first.answers) if first else [answer(ip, asn, bogon) for ip in ips]
    return DNSQuery(
        resolver_address=RESOLVER,
        hostname=host,
        query_type=qtype,  # type: ignore[arg-type]
        t0=0.0,
        t=0.02,
        failure=failure,
        rcode=rcode,
        answers=answers,
        replies=replies
        if replies is not None
        else ([] if failure else [DNSReply(t=0.01, rcode=rcode, answers=answers)]),
    )


def connect(ip: str, port: int, failure: str | None = None) -> TCPConnect:
    return TCPConnect(ip=ip, port=port, t0=0.1, t=0.2, success=failure is None, failure=failure)


def handshake(
    ip: str, port: int = 443, failure: str | None = None, stage: str | None = None, sni: str = HOST
) -> TLSHandshake:
    return TLSHandshake(
        address=f"{ip}:{port}",
        server_name=sni,
        t0=0.2,
        t=0.3,
        failure=failure,
        tls_version=None if failure else "TLSv1.3",
        validated=failure is None,
        failure_stage=stage,
    )


def response(
    body: str = PAGE, code: int = 200, headers: list[tuple[str, str]] | None = None, title: str | None = None
) -> HTTPResponse:
    data = body.encode()
    if title is None and "<title>" in body:
        title = body.split("<title>", 1)[1].split("</title>", 1)[0]
    return HTTPResponse(
        code=code,
        headers=SITE_HEADERS if headers is None else headers,
        body=body,
        body_length=len(data),
        body_sha256=hashlib.sha256(data).hexdigest(),
        title=title,
    )


def transaction(url: str, resp: HTTPResponse | None = None, failure: str | None = None) -> HTTPTransaction:
    return HTTPTransaction(
        t0=0.3,
        t=0.4,
        address=f"{SITE_IPS[0]}:{_port(url)}",
        transport="tls" if url.startswith("https") else "tcp",
        request=HTTPRequest(url=url),
        response=None if failure else (resp or response()),
        failure=failure,
    )


def _port(url: str) -> int:
    return 443 if url.startswith("https") else 80


def clean_keys(url: str, ips: tuple[str, ...] = SITE_IPS, asn: int | None = SITE_ASN) -> WebTestKeys:
    """What an unhindered probe records: answers, a connection (and handshake) to each, one response."""
    port = _port(url)
    return WebTestKeys(
        queries=[query(ips, asn=asn)],
        tcp_connect=[connect(ip, port) for ip in ips],
        tls_handshakes=[handshake(ip, port) for ip in ips] if port == 443 else [],
        requests=[transaction(url)],
    )


def clean_control(url: str) -> ControlObservations:
    return summarise(clean_keys(url))


HTTP_URL = f"http://{HOST}/"
HTTPS_URL = f"https://{HOST}/"


@dataclass(frozen=True)
class Case:
    name: str
    url: str
    keys: WebTestKeys
    control: ControlObservations | None
    blocking: object
    rules: list[str]  # rule ids of the layers, in order
    technique: str | None = None
    accessible: bool | None = None
    fingerprint: dict[str, object] = field(default_factory=dict)  # expected Fingerprint fields
    dns_consistency: str | None = None
    use_fingerprints: bool = True


def _update(keys: WebTestKeys, **changes: object) -> WebTestKeys:
    return keys.model_copy(update=changes)


def _cases() -> list[Case]:
    http_clean, https_clean = clean_keys(HTTP_URL), clean_keys(HTTPS_URL)
    http_control, https_control = clean_control(HTTP_URL), clean_control(HTTPS_URL)
    nxdomain = WebTestKeys(queries=[query((), failure="dns_nxdomain_error", rcode="NXDOMAIN")])
    site_down = _update(http_clean, requests=[transaction(HTTP_URL, failure="connection_reset")])
    cases = [
        Case(
            "clean http",
            HTTP_URL,
            http_clean,
            http_control,
            False,
            ["dns.consistent_ip", "tcp.connected", "http.identical_body"],
            accessible=True,
            dns_consistency="consistent",
        ),
        Case(
            "clean https",
            HTTPS_URL,
            https_clean,
            https_control,
            False,
            ["dns.consistent_ip", "tcp.connected", "tls.ok", "http.identical_body"],
            accessible=True,
            dns_consistency="consistent",
        ),
        Case(
            "same page, dynamic content (no diff)",
            HTTP_URL,
            _update(http_clean, requests=[transaction(HTTP_URL, response(PAGE.replace("x" * 50, "y" * 60)))]),
            http_control,
            False,
            ["dns.consistent_ip", "tcp.connected", "http.same_page"],
            accessible=True,
            dns_consistency="consistent",
        ),
        Case(
            "both NXDOMAIN: the site does not exist",
            HTTP_URL,
            nxdomain,
            summarise(nxdomain),
            False,
            ["dns.both_nxdomain"],
            accessible=False,
            dns_consistency="consistent",
        ),
        Case("no control", HTTP_URL, http_clean, None, None, ["control.missing"] * 3),
        Case(
            "control failed at DNS and HTTP",
            HTTP_URL,
            http_clean,
            ControlObservations(
                dns=ControlDNS(failure="generic_timeout_error"),
                http_request=ControlHTTP(failure="generic_timeout_error"),
            ),
            None,
            ["control.failed"] * 3,
        ),
        Case(
            "NXDOMAIN while the control resolved",
            HTTP_URL,
            nxdomain,
            http_control,
            "dns",
            ["dns.probe_failed"],
            technique="dns.nxdomain",
            accessible=False,
            fingerprint={"stage": "dns", "failure": "dns_nxdomain_error", "injected_ips": []},
            dns_consistency="inconsistent",
        ),
        Case(
            "injection: two replies, the forged one first",
            HTTP_URL,
            WebTestKeys(
                queries=[query(replies=[reply(FORGED_IP, t=0.005), reply(*SITE_IPS, t=0.03)])],
                tcp_connect=[connect(FORGED_IP, 80, "generic_timeout_error")],
            ),
            http_control,
            "dns",
            ["dns.injection", "tcp.failed_untested"],
            technique="dns.injection",
            fingerprint={"injected_ips": [FORGED_IP], "failure": None},
            dns_consistency="inconsistent",
        ),
        Case(
            "bogon answer (never connected to)",
            HTTP_URL,
            WebTestKeys(queries=[query((BOGON_IP,), bogon=True)]),
            http_control,
            "dns",
            ["dns.bogon"],
            technique="dns.bogon",
            fingerprint={"injected_ips": [BOGON_IP], "failure": "dns_bogon_error"},
            dns_consistency="inconsistent",
        ),
        Case(
            "inconsistent answers leading to another page",
            HTTP_URL,
            WebTestKeys(
                queries=[query(("203.0.113.77",), asn=64999)],
                tcp_connect=[connect("203.0.113.77", 80)],
                requests=[transaction(HTTP_URL, response("<html>elsewhere</html>", headers=BLOCK_HEADERS))],
            ),
            http_control,
            "dns",
            ["dns.inconsistent", "tcp.connected", "http.diff"],
            technique="dns.inconsistent",
            fingerprint={"injected_ips": ["203.0.113.77"], "blockpage_id": None},
            dns_consistency="inconsistent",
        ),
        Case(
            "inconsistent answers that served the control's page (a CDN)",
            HTTP_URL,
            _update(clean_keys(HTTP_URL, ("203.0.113.77",), asn=64999)),
            http_control,
            False,
            ["dns.inconsistent_page_matches", "tcp.connected", "http.identical_body"],
            accessible=True,
            dns_consistency="inconsistent",
        ),
        Case(
            "ASN-consistent answers",
            HTTP_URL,
            WebTestKeys(
                queries=[query(("198.51.100.99",), asn=SITE_ASN)],
                tcp_connect=[connect("198.51.100.99", 80)],
                requests=[transaction(HTTP_URL, response(PAGE.replace("x" * 10, "z" * 10)))],
            ),
            http_control,
            False,
            ["dns.consistent_asn", "tcp.connected", "http.same_page"],
            accessible=True,
            dns_consistency="consistent",
        ),
        Case(
            "TLS-consistent answers (a validated handshake to a probe-resolved address)",
            HTTPS_URL,
            WebTestKeys(
                queries=[query(("203.0.113.80",))],
                tcp_connect=[connect("203.0.113.80", 443)],
                tls_handshakes=[handshake("203.0.113.80")],
                requests=[transaction(HTTPS_URL, response(PAGE.replace("x" * 10, "w" * 10)))],
            ),
            https_control,
            False,
            ["dns.consistent_tls", "tcp.connected", "tls.ok", "http.same_page"],
            accessible=True,
            dns_consistency="consistent",
        ),
        Case(
            "TCP timeout to the site's own addresses",
            HTTP_URL,
            _update(
                http_clean,
                tcp_connect=[connect(ip, 80, "generic_timeout_error") for ip in SITE_IPS],
                requests=[],
            ),
            http_control,
            "tcp_ip",
            ["dns.consistent_ip", "tcp.blocked_same_addresses"],
            technique="tcp.timeout",
            fingerprint={"stage": "tcp_ip", "failure": "generic_timeout_error"},
            dns_consistency="consistent",
        ),
        Case(
            "TLS reset after the ClientHello",
            HTTPS_URL,
            _update(
                https_clean,
                tls_handshakes=[
                    handshake(ip, failure="connection_reset", stage="after_client_hello") for ip in SITE_IPS
                ],
                requests=[],
            ),
            https_control,
            "http-failure",
            ["dns.consistent_ip", "tcp.connected", "tls.blocked"],
            technique="tls.reset",
            fingerprint={"stage": "tls", "failure": "connection_reset"},
        ),
        Case(
            "HTTP request reset while the control got the page",
            HTTP_URL,
            site_down,
            http_control,
            "http-failure",
            ["dns.consistent_ip", "tcp.connected", "http.failure"],
            technique="http.failure",
            fingerprint={"stage": "http", "failure": "connection_reset"},
        ),
        Case(
            "probe and control failed the same way: the site is down",
            HTTP_URL,
            site_down,
            summarise(site_down),
            False,
            ["dns.consistent_ip", "tcp.connected", "http.both_failed"],
            accessible=False,
        ),
        Case(
            "blockpage recognised by its fingerprint",
            HTTP_URL,
            _update(http_clean, requests=[transaction(HTTP_URL, response(BLOCKPAGE, headers=BLOCK_HEADERS))]),
            http_control,
            "http-diff",
            ["dns.consistent_ip", "tcp.connected", "http.blockpage"],
            technique="http.blockpage",
            fingerprint={"blockpage_id": "test.blockpage", "stage": "http"},
        ),
        Case(
            "redirect to a blocking host (header.location fingerprint on the first hop)",
            HTTP_URL,
            _update(
                http_clean,
                requests=[
                    transaction(
                        HTTP_URL,
                        response(
                            "", 302, [("LOCATION", "http://blocked.example.net/?site=x"), ("Server", "c")]
                        ),
                    ),
                    transaction("http://blocked.example.net/?site=x", response("<html>No.</html>")),
                ],
            ),
            http_control,
            "http-diff",
            ["dns.consistent_ip", "tcp.connected", "http.blockpage"],
            technique="http.blockpage",
            fingerprint={"blockpage_id": "test.redirect"},
        ),
        Case(
            "a different page, by status, length, headers and title",
            HTTP_URL,
            _update(
                http_clean,
                requests=[
                    transaction(
                        HTTP_URL, response("<html><title>Forbidden</title></html>", 403, BLOCK_HEADERS)
                    )
                ],
            ),
            http_control,
            "http-diff",
            ["dns.consistent_ip", "tcp.connected", "http.diff"],
            technique="http.diff",
            fingerprint={"blockpage_id": None},
        ),
        Case(
            "a different page with a vague blocking phrase",
            HTTP_URL,
            _update(
                http_clean,
                requests=[
                    transaction(HTTP_URL, response("<title>Access Denied</title>", 200, BLOCK_HEADERS))
                ],
            ),
            http_control,
            "http-diff",
            ["dns.consistent_ip", "tcp.connected", "http.diff_vague_fingerprint"],
            technique="http.blockpage",
            fingerprint={"blockpage_id": "test.vague"},
        ),
        Case(
            "a known false-positive fingerprint never blocks (the real page matches an fp row)",
            HTTP_URL,
            _update(http_clean, requests=[transaction(HTTP_URL, response(PAGE.replace("x" * 20, "q" * 20)))]),
            http_control,
            False,
            ["dns.consistent_ip", "tcp.connected", "http.same_page"],
            accessible=True,
        ),
        Case(
            "an answer that is a known blocking address",
            HTTP_URL,
            WebTestKeys(
                queries=[query((OTHER_IP,))],
                tcp_connect=[connect(OTHER_IP, 80)],
                requests=[transaction(HTTP_URL, response("<html>blocked</html>", headers=BLOCK_HEADERS))],
            ),
            http_control,
            "dns",
            ["dns.fingerprint", "tcp.connected", "http.diff"],
            technique="dns.fingerprint",
            fingerprint={"blockpage_id": "test.dns_block", "injected_ips": [OTHER_IP]},
        ),
        Case(
            "several layers interfere: the earliest (DNS) decides, all are listed",
            HTTPS_URL,
            _update(
                https_clean,
                queries=[
                    query(asn=SITE_ASN),
                    query(
                        qtype="AAAA",
                        replies=[reply("2001:db8::66", t=0.004), reply(rcode="NOERROR", t=0.03)],
                    ),
                ],
                tls_handshakes=[
                    handshake(ip, failure="connection_reset", stage="after_client_hello") for ip in SITE_IPS
                ],
                requests=[],
            ),
            https_control,
            "dns",
            ["dns.injection", "tcp.connected", "tls.blocked"],
            technique="dns.injection",
            fingerprint={"injected_ips": ["2001:db8::66"]},
        ),
        Case(
            "an IP-literal URL skips DNS",
            "http://198.51.100.10/",
            WebTestKeys(
                tcp_connect=[connect("198.51.100.10", 80)], requests=[transaction("http://198.51.100.10/")]
            ),
            summarise(
                WebTestKeys(
                    tcp_connect=[connect("198.51.100.10", 80)],
                    requests=[transaction("http://198.51.100.10/")],
                )
            ),
            False,
            ["dns.ip_literal", "tcp.connected", "http.identical_body"],
            accessible=True,
        ),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_analyse(case: Case) -> None:
    verdict = analyse(case.url, case.keys, case.control, FINGERPRINTS if case.use_fingerprints else None)
    assert verdict.blocking == case.blocking
    assert [lv.rule_id for lv in verdict.layers] == case.rules
    if case.technique is None:
        assert verdict.fingerprint is None
    else:
        assert verdict.fingerprint is not None
        assert verdict.fingerprint.technique == case.technique
        for name, value in case.fingerprint.items():
            assert getattr(verdict.fingerprint, name) == value, name
    if case.blocking not in (False, None):
        assert verdict.accessible is False
        deciding = next(lv for lv in verdict.layers if lv.outcome == "interference")
        assert deciding.fingerprint == verdict.fingerprint
    else:
        assert verdict.accessible is case.accessible
    assert verdict.dns_consistency == case.dns_consistency or case.dns_consistency is None
    known = {r.rule_id: r for r in RULES}
    for lv in verdict.layers:
        assert lv.rule_id in known and lv.reason
        assert lv.outcome == known[lv.rule_id].outcome
        # what dashboards and the interference metrics group by: only the vocabulary's techniques
        assert lv.fingerprint is None or lv.fingerprint.technique in TECHNIQUES, lv.fingerprint


def test_the_cases_emit_techniques_of_every_layer() -> None:
    # So that the technique check in test_analyse is not vacuous for a layer.
    emitted = set()
    for case in CASES:
        verdict = analyse(case.url, case.keys, case.control, FINGERPRINTS if case.use_fingerprints else None)
        emitted |= {lv.fingerprint.technique for lv in verdict.layers if lv.fingerprint is not None}
    assert {t.partition(".")[0] for t in emitted} == {"dns", "tcp", "tls", "http"}


def _by_name(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def test_same_page_sets_the_comparisons() -> None:
    case = _by_name("same page, dynamic content (no diff)")
    verdict = analyse(case.url, case.keys, case.control)
    assert verdict.status_code_match is True
    assert verdict.body_length_match is True
    assert verdict.headers_match is True
    assert verdict.title_match is True


def test_http_diff_sets_the_comparisons() -> None:
    case = _by_name("a different page, by status, length, headers and title")
    verdict = analyse(case.url, case.keys, case.control)
    # The control got a 200, so a 403 is a mismatch (not "no reference").
    assert verdict.status_code_match is False
    assert verdict.body_length_match is False
    assert verdict.headers_match is False  # X-Cache is missing
    assert verdict.title_match is False


def test_without_fingerprints_a_blockpage_is_still_a_diff() -> None:
    case = _by_name("blockpage recognised by its fingerprint")
    verdict = analyse(case.url, case.keys, case.control, None)
    assert verdict.blocking == "http-diff"
    assert verdict.layers[-1].rule_id == "http.diff"
    assert verdict.fingerprint is not None and verdict.fingerprint.blockpage_id is None


def test_a_truncated_body_has_no_length_verdict() -> None:
    keys = clean_keys(HTTP_URL)
    short = response(PAGE[:200]).model_copy(update={"body_is_truncated": True})
    keys = _update(keys, requests=[transaction(HTTP_URL, short)])
    verdict = analyse(HTTP_URL, keys, clean_control(HTTP_URL))
    assert verdict.body_length_match is None
    # Status, headers and title still match: the same page, cut short by the cap.
    assert verdict.blocking is False


def test_non_2xx_control_is_no_reference_for_the_status() -> None:
    control = clean_control(HTTP_URL)
    control = control.model_copy(
        update={"http_request": control.http_request.model_copy(update={"status_code": 503})}
    )
    verdict = analyse(HTTP_URL, clean_keys(HTTP_URL), control)
    assert verdict.status_code_match is None


# --------------------------------------------------------------------------------------- fingerprints


def _verdict_of(make: Callable[[], tuple[str, WebTestKeys, ControlObservations]]) -> Verdict:
    url, keys, control = make()
    return analyse(url, keys, control, FINGERPRINTS)


def _tls_reset(ips: tuple[str, ...], t_shift: float) -> tuple[str, WebTestKeys, ControlObservations]:
    keys = WebTestKeys(
        queries=[query(ips)],
        tcp_connect=[connect(ip, 443) for ip in ips],
        tls_handshakes=[
            handshake(ip, failure="connection_reset", stage="after_client_hello").model_copy(
                update={"t0": 0.2 + t_shift, "t": 0.3 + t_shift}
            )
            for ip in ips
        ],
    )
    return HTTPS_URL, keys, clean_control(HTTPS_URL)


def _injection(forged: str, t_shift: float) -> tuple[str, WebTestKeys, ControlObservations]:
    keys = WebTestKeys(queries=[query(replies=[reply(forged, t=0.004 + t_shift), reply(*SITE_IPS, t=0.05)])])
    return HTTP_URL, keys, clean_control(HTTP_URL)


def _blockpage(extra: str) -> tuple[str, WebTestKeys, ControlObservations]:
    page = BLOCKPAGE.replace("</body>", f"<!-- {extra} --></body>")
    keys = _update(
        clean_keys(HTTP_URL), requests=[transaction(HTTP_URL, response(page, headers=BLOCK_HEADERS))]
    )
    return HTTP_URL, keys, clean_control(HTTP_URL)


def _tcp(failure: str) -> tuple[str, WebTestKeys, ControlObservations]:
    keys = _update(
        clean_keys(HTTP_URL), tcp_connect=[connect(ip, 80, failure) for ip in SITE_IPS], requests=[]
    )
    return HTTP_URL, keys, clean_control(HTTP_URL)


def _key(make: Callable[[], tuple[str, WebTestKeys, ControlObservations]]) -> str:
    fp = _verdict_of(make).fingerprint
    assert fp is not None
    return fp.key


def test_identical_interferences_have_equal_keys() -> None:
    # Same technique seen at different times (and the blockpage with different bytes): one key.
    assert _key(lambda: _tls_reset(SITE_IPS, 0.0)) == _key(lambda: _tls_reset(SITE_IPS, 1.5))
    assert _key(lambda: _injection(FORGED_IP, 0.0)) == _key(lambda: _injection(FORGED_IP, 0.01))
    assert _key(lambda: _blockpage("request 1")) == _key(lambda: _blockpage("request 2"))
    assert _key(lambda: _tcp("generic_timeout_error")) == _key(lambda: _tcp("generic_timeout_error"))


def test_different_interferences_have_different_keys() -> None:
    keys = {
        _key(lambda: _tls_reset(SITE_IPS, 0.0)),
        _key(lambda: _injection(FORGED_IP, 0.0)),
        _key(lambda: _injection("203.0.113.67", 0.0)),
        _key(lambda: _blockpage("x")),
        _key(lambda: _tcp("generic_timeout_error")),
        _key(lambda: _tcp("connection_refused")),
    }
    assert len(keys) == 6


def test_round_robin_replies_are_not_injection() -> None:
    # Two replies with different answer sets, both agreeing with the control: a retransmission.
    keys = _update(
        clean_keys(HTTP_URL), queries=[query(replies=[reply(SITE_IPS[0]), reply(SITE_IPS[1], t=0.2)])]
    )
    verdict = analyse(HTTP_URL, keys, clean_control(HTTP_URL))
    assert verdict.blocking is False
    assert verdict.layers[0].rule_id == "dns.consistent_ip"


def test_a_cname_to_a_known_blocking_host() -> None:
    rows, _ = parse_csv(
        "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,"
        "source,exp_url,notes\ntest.cname,isp,,dns,full,blockpage.isp.example,5,XL,tests,,\n",
        "dns",
    )
    cname = DNSAnswer(answer_type="CNAME", hostname="BlockPage.isp.example.")
    q = query(("203.0.113.40",)).model_copy(update={"answers": [cname, answer("203.0.113.40")]})
    verdict = analyse(HTTP_URL, WebTestKeys(queries=[q]), clean_control(HTTP_URL), FingerprintDB(dns=rows))
    assert verdict.blocking == "dns"
    assert verdict.layers[0].rule_id == "dns.fingerprint"
    assert verdict.fingerprint is not None and verdict.fingerprint.blockpage_id == "test.cname"


def test_both_servfail_is_a_broken_name_not_censorship() -> None:
    keys = WebTestKeys(queries=[query((), failure="dns_servfail_error", rcode="SERVFAIL")])
    verdict = analyse(HTTP_URL, keys, summarise(keys))
    assert (verdict.blocking, verdict.accessible) == (False, False)
    assert [lv.rule_id for lv in verdict.layers] == ["dns.both_failed"]


def test_both_timeouts_at_dns_say_nothing() -> None:
    keys = WebTestKeys(queries=[query((), failure="generic_timeout_error", rcode="")])
    verdict = analyse(HTTP_URL, keys, summarise(keys))
    assert verdict.blocking is None
    assert {lv.rule_id for lv in verdict.layers} == {"control.failed"}


def test_nobody_can_connect_the_site_is_down() -> None:
    keys = _update(
        clean_keys(HTTP_URL),
        tcp_connect=[connect(ip, 80, "connection_refused") for ip in SITE_IPS],
        requests=[],
    )
    verdict = analyse(HTTP_URL, keys, summarise(keys))
    assert (verdict.blocking, verdict.accessible) == (False, False)
    assert [lv.rule_id for lv in verdict.layers] == ["dns.consistent_ip", "tcp.both_failed"]


def test_both_handshakes_fail_alike_the_certificate_is_bad_everywhere() -> None:
    keys = _update(
        clean_keys(HTTPS_URL),
        tls_handshakes=[
            handshake(ip, failure="ssl_invalid_hostname", stage="during_handshake") for ip in SITE_IPS
        ],
        requests=[],
    )
    verdict = analyse(HTTPS_URL, keys, summarise(keys))
    assert (verdict.blocking, verdict.accessible) == (False, False)
    assert verdict.layers[-1].rule_id == "tls.both_failed"


def test_a_control_without_a_page_cannot_judge_the_probe_page() -> None:
    control = clean_control(HTTP_URL)
    control = control.model_copy(update={"http_request": ControlHTTP(failure="connection_reset")})
    keys = _update(clean_keys(HTTP_URL), requests=[transaction(HTTP_URL, response("<html>other</html>"))])
    verdict = analyse(HTTP_URL, keys, control)
    assert verdict.blocking is None
    assert verdict.layers[-1].rule_id == "http.control_failed"


def test_no_request_and_no_reason_is_no_verdict() -> None:
    keys = _update(clean_keys(HTTP_URL), requests=[])
    verdict = analyse(HTTP_URL, keys, clean_control(HTTP_URL))
    assert verdict.blocking is None
    assert verdict.layers[-1].rule_id == "http.not_attempted"


def _redirect_to_https(hop_failure: str, *, handshakes: bool = True) -> WebTestKeys:
    """http:// answers 301 to https:// on the same host; that hop got no response."""
    moved = response(body="", code=301, headers=[("Location", HTTPS_URL)], title="")
    failed = HTTPTransaction(
        t0=0.5, t=0.6, transport="tls", request=HTTPRequest(url=HTTPS_URL), failure=hop_failure
    )
    return WebTestKeys(
        queries=[query(SITE_IPS, asn=SITE_ASN)],
        tcp_connect=[connect(ip, 80) for ip in SITE_IPS]
        + [connect(ip, 443, None if handshakes else hop_failure) for ip in SITE_IPS],
        tls_handshakes=[handshake(ip, 443, hop_failure, "after_client_hello") for ip in SITE_IPS]
        if handshakes
        else [],
        requests=[transaction(HTTP_URL, moved), failed],
    )


def test_a_redirect_whose_tls_handshake_is_reset_is_tls_interference() -> None:
    """OONI classifies by the step that failed: the redirect hop's reset handshake is a TLS reset, not an
    HTTP failure (the blocking value stays OONI's ``http-failure``: its vocabulary has no TLS value)."""
    verdict = analyse(HTTP_URL, _redirect_to_https("connection_reset"), clean_control(HTTP_URL), FINGERPRINTS)
    deciding = next(lv for lv in verdict.layers if lv.outcome == "interference")
    assert (deciding.rule_id, deciding.layer) == ("tls.redirect_blocked", "tls")
    assert verdict.blocking == "http-failure" and verdict.fingerprint is not None
    assert (verdict.fingerprint.technique, verdict.fingerprint.stage) == ("tls.reset", "tls")
    # ... and a redirect hop whose connects time out is TCP interference
    blackholed = analyse(
        HTTP_URL, _redirect_to_https("generic_timeout_error", handshakes=False), clean_control(HTTP_URL)
    )
    assert blackholed.blocking == "tcp_ip" and blackholed.fingerprint is not None
    assert blackholed.fingerprint.technique == "tcp.timeout"
    # a first hop that failed by itself is still judged by its own layers
    own = analyse(
        HTTPS_URL,
        _update(clean_keys(HTTPS_URL), requests=[transaction(HTTPS_URL, failure="connection_reset")]),
        clean_control(HTTPS_URL),
    )
    assert [lv.rule_id for lv in own.layers][-1] == "http.failure"

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewatch.agent.minimise import (
    ANALYSED_HEADERS,
    BODY_POLICY_ANNOTATION,
    CANDIDATE_BODIES,
    DROPPED,
    FULL_BODIES,
    MAX_KEPT_BODY,
    NEVER_KEPT_HEADERS,
    StoragePolicy,
    fingerprint_headers,
    minimise,
    without_validated_der,
)
from gatewatch.analysis import analyse, load_default_fingerprints
from gatewatch.analysis.fingerprints import FingerprintDB, parse_csv
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import HTTPRequest, HTTPResponse, HTTPTransaction, TCPConnect

from .conftest import OWN_V4, echoing_keys, make_measurement

BLOCKPAGE_TEXT = "Access to this site has been restricted by the Lab Telecommunications Authority"
HEADERS_CSV = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,source,"
    "exp_url,notes\n"
    "t.server,nat,,header.server,prefix,Protected by WireFilter,5,,t,,\n"
    "t.location,isp,,header.location,prefix,http://blocked.example,5,,t,,\n"
    "t.app,isp,,header.x-app-url,full,https://blocked.netalerts.io,5,,t,,\n"
    "t.cookie,isp,,header.set-cookie,contains,blocked=1,5,,t,,\n"
    f"t.body,nat,,body,contains,{BLOCKPAGE_TEXT},5,,t,,\n"
)


def _db(text: str = HEADERS_CSV) -> FingerprintDB:
    rows, rejected = parse_csv(text, "http")
    assert not rejected
    return FingerprintDB(rows)


def _page(body: str, code: int = 200, headers: list[tuple[str, str]] | None = None) -> HTTPResponse:
    return HTTPResponse(
        code=code,
        headers=headers if headers is not None else [("Server", "nginx"), ("Content-Type", "text/html")],
        body=body,
        body_length=len(body.encode()),
        body_sha256=hashlib.sha256(body.encode()).hexdigest(),
        title=None,
    )


def _with(response: HTTPResponse, control: ControlHTTP | None) -> Measurement:
    keys = WebTestKeys(
        tcp_connect=[TCPConnect(ip="198.51.100.10", port=80, t0=0, t=0.01, success=True)],
        requests=[
            HTTPTransaction(
                t0=0.0,
                t=0.1,
                address="198.51.100.10:80",
                request=HTTPRequest(url="http://site.example/"),
                response=response,
            )
        ],  # fmt: skip
        control=ControlObservations(
            dns=ControlDNS(addrs=["198.51.100.10"]),
            tcp_connect={"198.51.100.10:80": ControlTCP(status=True)},
            http_request=control or ControlHTTP(failure="generic_timeout_error"),
        ),
    )
    return make_measurement(keys, url="http://site.example/")


def _response(m: Measurement) -> HTTPResponse:
    response = m.test_keys.requests[-1].response
    assert response is not None
    return response


def test_header_names_stay_and_only_analysed_values_are_kept() -> None:
    headers = [
        ("Server", "nginx"),
        ("Set-Cookie", "session=abc; Path=/"),
        ("X-Client-IP", "203.0.113.7"),
        ("Location", "http://elsewhere.example/"),
        ("Via", "1.1 proxy"),
        ("Content-Length", "12"),
        ("X-Tracking-Token", "eyJpcCI6IjIwMy4wLjExMy43In0="),
    ]
    kept = minimise(_with(_page("<p>hello</p>", headers=headers), None))
    got = _response(kept).headers
    assert [name for name, _ in got] == [name for name, _ in headers]
    values = dict(got)
    assert values["Server"] == "nginx"
    assert values["Location"] == "http://elsewhere.example/"
    assert values["Via"] == "1.1 proxy"
    assert values["Content-Length"] == "12"
    for name in ("Set-Cookie", "X-Client-IP", "X-Tracking-Token"):
        assert values[name] == DROPPED


def test_cookie_values_are_never_kept_even_when_a_fingerprint_names_them() -> None:
    policy = StoragePolicy.for_fingerprints(_db())
    assert "set-cookie" in fingerprint_headers(_db())
    assert "set-cookie" not in policy.kept_header_values
    assert {"server", "location", "x-app-url"} <= policy.kept_header_values
    m = _with(
        _page("x", headers=[("Set-Cookie", "blocked=1"), ("Cookie", "a=b"), ("Authorization", "x")]), None
    )
    assert all(value == DROPPED for _, value in _response(minimise(m, policy, _db())).headers)


def test_every_header_the_shipped_fingerprints_read_keeps_its_value() -> None:
    """The policy and the fingerprint database cannot drift: a header row added to the shipped database
    is kept by the policy built from it."""
    db = load_default_fingerprints()
    policy = StoragePolicy.for_fingerprints(db)
    assert fingerprint_headers(db) - NEVER_KEPT_HEADERS <= policy.kept_header_values
    assert ANALYSED_HEADERS <= policy.kept_header_values


def test_a_page_identical_to_the_control_keeps_no_body() -> None:
    page = _page("<html><title>Real site</title></html>")
    control = ControlHTTP(status_code=200, body_sha256=page.body_sha256, body_length=page.body_length)
    response = _response(minimise(_with(page, control)))
    assert response.body is None
    assert (response.body_sha256, response.body_length) == (page.body_sha256, page.body_length)


def test_a_page_like_the_control_keeps_no_body_but_its_length_hash_and_title() -> None:
    page = _page("<html><title>Real site today</title><p>changing news</p></html>").model_copy(
        update={"title": "Real site today"}
    )
    control = ControlHTTP(status_code=200, body_length=page.body_length + 3, body_sha256="ab" * 32, title="x")
    response = _response(minimise(_with(page, control)))
    assert response.body is None
    assert response.title == "Real site today"
    assert response.body_length == page.body_length and response.body_sha256 == page.body_sha256


def test_a_small_page_that_differs_from_the_control_is_kept() -> None:
    page = _page("<html><title>Stop</title><p>Site blocked</p></html>", code=403)
    control = ControlHTTP(status_code=200, body_length=40_000, body_sha256="ab" * 32, title="Real")
    assert _response(minimise(_with(page, control))).body == page.body


def test_a_large_page_that_differs_is_dropped_unless_a_fingerprint_matches_it() -> None:
    filler = "<p>" + "news " * (MAX_KEPT_BODY // 4) + "</p>"
    control = ControlHTTP(status_code=200, body_length=100, body_sha256="ab" * 32, title="Real")
    large = _page(filler, code=403)
    assert large.body_length > MAX_KEPT_BODY
    assert _response(minimise(_with(large, control), fingerprints=_db())).body is None
    blockpage = _page(filler + BLOCKPAGE_TEXT, code=403)
    assert _response(minimise(_with(blockpage, control), fingerprints=_db())).body == blockpage.body


def test_with_no_usable_control_a_small_page_is_kept() -> None:
    page = _page("<p>portal</p>")
    assert _response(minimise(_with(page, None))).body == page.body


def test_the_opt_in_keeps_every_body_and_says_so() -> None:
    page = _page("<html>" + "x" * (2 * MAX_KEPT_BODY) + "</html>")
    control = ControlHTTP(status_code=200, body_sha256=page.body_sha256)
    default = minimise(_with(page, control))
    full = minimise(_with(page, control), StoragePolicy(keep_full_bodies=True))
    assert default.annotations[BODY_POLICY_ANNOTATION] == CANDIDATE_BODIES
    assert full.annotations[BODY_POLICY_ANNOTATION] == FULL_BODIES
    assert _response(default).body is None
    assert _response(full).body == page.body
    assert dict(_response(full).headers)["Server"] == "nginx"
    # Header values stay minimised under the opt-in: it is about bodies.
    m = _with(_page("x", headers=[("Set-Cookie", "a=b")]), None)
    assert _response(minimise(m, StoragePolicy(keep_full_bodies=True))).headers == [("Set-Cookie", DROPPED)]


def test_control_header_values_follow_the_same_rule() -> None:
    control = ControlHTTP(
        status_code=200, headers={"Server": "nginx", "Set-Cookie": "sid=1", "X-Powered": "php"}
    )
    kept = minimise(_with(_page("x"), control))
    assert kept.test_keys.control is not None
    assert kept.test_keys.control.http_request.headers == {
        "Server": "nginx",
        "Set-Cookie": DROPPED,
        "X-Powered": DROPPED,
    }


def test_a_minimised_measurement_is_still_valid_and_round_trips() -> None:
    m = minimise(make_measurement(echoing_keys()))
    again = Measurement.model_validate_json(m.to_json_bytes())
    assert again.to_json_bytes() == m.to_json_bytes()


_names = st.sampled_from(["Server", "Location", "Via", "X-App-Url", "Set-Cookie", "X-Other", "Content-Type"])
_codes = st.sampled_from([200, 200, 301, 403, 451, 500])


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[HTTPResponse, ControlHTTP]:
    pick = draw(st.sampled_from(["blockpage", "same", "other", "large"]))
    base = "<html><title>Real site of the example</title><p>" + "words " * draw(st.integers(1, 50)) + "</p>"
    body = {
        "blockpage": f"<p>{BLOCKPAGE_TEXT}</p>",
        "same": base,
        "other": draw(st.text(max_size=200)),
        "large": base + "z" * (MAX_KEPT_BODY + draw(st.integers(0, 100))),
    }[pick]
    headers = draw(
        st.lists(st.tuples(_names, st.sampled_from(["nginx", "Protected by WireFilter 1", ""])), max_size=5)
    )
    page = _page(body, code=draw(_codes), headers=headers).model_copy(
        update={"title": draw(st.sampled_from([None, "Real site of the example", "Blocked"]))}
    )
    control = ControlHTTP(
        status_code=draw(_codes),
        headers=dict(draw(st.lists(st.tuples(_names, st.just("v")), max_size=4))),
        title=draw(st.sampled_from([None, "Real site of the example"])),
        body_length=draw(st.sampled_from([None, len(base), 10])),
        body_sha256=draw(st.sampled_from([None, hashlib.sha256(base.encode()).hexdigest()])),
    )
    return page, control


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pairs())
def test_judging_the_minimised_measurement_gives_the_same_verdict(
    pair: tuple[HTTPResponse, ControlHTTP],
) -> None:
    page, control = pair
    db = _db()
    full = _with(page, control)
    small = minimise(full, StoragePolicy.for_fingerprints(db), db)
    url = "http://site.example/"
    assert small.test_keys.control is not None and full.test_keys.control is not None
    verdict_full = analyse(url, full.test_keys, full.test_keys.control, db)
    verdict_small = analyse(url, small.test_keys, small.test_keys.control, db)
    assert verdict_small == verdict_full


@pytest.mark.parametrize("keep_full_bodies", [False, True])
def test_a_built_measurement_carries_its_body_policy(keep_full_bodies: bool) -> None:
    m = minimise(make_measurement(echoing_keys()), StoragePolicy(keep_full_bodies=keep_full_bodies))
    assert m.annotations[BODY_POLICY_ANNOTATION] == (FULL_BODIES if keep_full_bodies else CANDIDATE_BODIES)


def test_certificate_bytes_are_kept_only_where_the_chain_did_not_validate() -> None:
    keys = echoing_keys()
    handshake = keys.tls_handshakes[0]
    certificate = handshake.peer_certificates[0].model_copy(update={"der_b64": "MIIB"})
    for validated, policy, kept in [
        (True, StoragePolicy(), False),
        (False, StoragePolicy(), True),
        (True, StoragePolicy(keep_full_bodies=True), True),
    ]:
        changed = handshake.model_copy(update={"validated": validated, "peer_certificates": [certificate]})
        m = minimise(make_measurement(keys.model_copy(update={"tls_handshakes": [changed]})), policy)
        [stored] = m.test_keys.tls_handshakes[0].peer_certificates
        assert (stored.der_b64 == "MIIB") is kept
        assert stored.sha256 == certificate.sha256 and stored.subject == certificate.subject


def test_the_probes_own_request_headers_keep_their_values() -> None:
    request = HTTPRequest(
        url="http://site.example/",
        headers=[
            ("Host", "site.example"),
            ("Accept-Encoding", "identity"),
            ("Cookie", "a=b"),
            ("X-Other", "1"),
        ],
    )
    keys = WebTestKeys(requests=[HTTPTransaction(t0=0, t=0.1, request=request)])
    [kept] = minimise(make_measurement(keys)).test_keys.requests
    assert kept.request.headers == [
        ("Host", "site.example"), ("Accept-Encoding", "identity"), ("Cookie", DROPPED), ("X-Other", DROPPED),
    ]  # fmt: skip


@pytest.mark.parametrize("keep_full_bodies", [False, True])
@pytest.mark.parametrize("validated", [False, True])
@pytest.mark.parametrize("echoed", [False, True])
def test_dropping_validated_der_before_scrubbing_stores_the_same_bytes(
    keep_full_bodies: bool, validated: bool, echoed: bool
) -> None:
    """The runner drops what minimising would drop before scrubbing (agent/runner.py): the stored
    measurement is the same, byte for byte, whether or not the DER text held the volunteer's address."""
    from gatewatch.agent.anonymise import Identity, anonymise

    keys = echoing_keys()
    handshake = keys.tls_handshakes[0]
    text = f"subject CN={OWN_V4} " if echoed else "subject CN=site.example "
    der_b64 = base64.b64encode(text.encode() * 20).decode()
    certificate = handshake.peer_certificates[0].model_copy(update={"der_b64": der_b64})
    changed = handshake.model_copy(update={"validated": validated, "peer_certificates": [certificate]})
    m = make_measurement(keys.model_copy(update={"tls_handshakes": [changed]}))
    identity = Identity.of(own_addresses=[OWN_V4])
    policy = StoragePolicy(keep_full_bodies=keep_full_bodies)
    early = without_validated_der(m, policy)
    assert (early.test_keys.tls_handshakes[0].peer_certificates[0].der_b64 is None) is (
        validated and not keep_full_bodies
    )
    assert (early is m) is (not validated or keep_full_bodies)
    stored = minimise(anonymise(early, identity), policy).to_json_bytes()
    assert stored == minimise(anonymise(m, identity), policy).to_json_bytes()
    assert OWN_V4.encode() not in stored
    kept = minimise(anonymise(early, identity), policy).test_keys.tls_handshakes[0].peer_certificates[0]
    assert (kept.der_b64 is not None and kept.der_b64 != der_b64) is (echoed and kept.der_b64 is not None)

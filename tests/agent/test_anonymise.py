from __future__ import annotations

import getpass
import hashlib
import ipaddress
import json
import os
import socket
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.agent.anonymise import PRIVATE, SCRUBBED, Identity, anonymise, is_lan_address, scrub_text
from gatewatch.agent.build import build_measurement
from gatewatch.agent.testlists import TestListEntry
from gatewatch.core.measurement import Measurement
from gatewatch.core.wire import Geolocation

from .conftest import CENSOR_ANSWER, LAN_RESOLVER, OWN_V4, OWN_V6, T0, echoing_keys, make_measurement

IDENTITY = Identity.of(own_addresses=[OWN_V4, OWN_V6])


def _text(m: Measurement) -> str:
    return m.to_json_bytes().decode()


def test_own_addresses_are_scrubbed_everywhere_and_the_result_still_validates() -> None:
    raw = make_measurement(echoing_keys(), url=f"http://echo.example/?from={OWN_V4}")
    assert OWN_V4 in _text(raw)

    clean = anonymise(raw, IDENTITY)
    text = _text(clean)
    assert OWN_V4 not in text
    assert "203-0-113-7" not in text
    for form in (OWN_V6, OWN_V6.upper(), "2001:0db8:0001:0000:0000:0000:0000:0007"):
        assert form.lower() not in text.lower()
    Measurement.model_validate_json(clean.to_json_bytes())  # still a valid measurement

    keys = clean.test_keys
    response = keys.requests[0].response
    assert response is not None
    assert ("X-Client-IP", SCRUBBED) in response.headers
    assert ("X-Client-IPv6", f"[{SCRUBBED}]:5555") in response.headers
    assert response.title == f"Your IP is {SCRUBBED}"
    assert keys.queries[0].answers[0].ipv4 == SCRUBBED
    assert keys.queries[1].answers[0].ipv6 == SCRUBBED
    assert keys.tcp_connect[0].failure == f"unknown_failure: bind {SCRUBBED}"
    assert clean.input == f"http://echo.example/?from={SCRUBBED}"
    assert keys.control is not None and f"{SCRUBBED}:443" in keys.control.tcp_connect
    assert keys.verdict is not None and keys.verdict.fingerprint is not None
    assert SCRUBBED in keys.verdict.fingerprint.injected_ips


def test_evidence_that_is_not_the_volunteer_is_kept() -> None:
    clean = anonymise(make_measurement(echoing_keys()), IDENTITY)
    keys = clean.test_keys
    assert keys.queries[0].answers[1].ipv4 == CENSOR_ANSWER  # the censor's bogon answer is evidence
    assert keys.tcp_connect[0].ip == "198.51.100.10"
    assert keys.verdict is not None and CENSOR_ANSWER in keys.verdict.fingerprint.injected_ips  # type: ignore[union-attr]


def test_hashes_over_scrubbed_content_cannot_be_brute_forced_back_to_the_address() -> None:
    raw = make_measurement(echoing_keys())
    clean = anonymise(raw, IDENTITY)
    response = clean.test_keys.requests[0].response
    assert response is not None and response.body is not None
    assert response.body_sha256 == hashlib.sha256(response.body.encode()).hexdigest()
    assert response.body_sha256 != raw.test_keys.requests[0].response.body_sha256  # type: ignore[union-attr]
    assert clean.test_keys.queries[0].replies[0].wire_sha256 is None


def test_a_private_resolver_becomes_the_category_private() -> None:
    clean = anonymise(make_measurement(echoing_keys()), IDENTITY)
    assert clean.test_keys.queries[0].resolver_address == f"{PRIVATE}:53"
    assert LAN_RESOLVER not in _text(clean)


def test_private_v6_resolver_and_given_gateway() -> None:
    keys = echoing_keys(resolver="[fe80::1ff:fe23:4567:890a]:53")
    identity = Identity.of(own_addresses=[OWN_V4], lan_addresses=["192.168.1.254"])
    m = make_measurement(keys, url="http://echo.example/?gw=192.168.1.254")
    clean = anonymise(m, identity)
    assert clean.test_keys.queries[0].resolver_address == f"[{PRIVATE}]:53"
    assert clean.input == f"http://echo.example/?gw={PRIVATE}"


def test_a_public_or_loopback_resolver_is_kept() -> None:
    for resolver in ("9.9.9.9:53", "127.53.0.1:53"):
        clean = anonymise(make_measurement(echoing_keys(resolver=resolver)), IDENTITY)
        assert clean.test_keys.queries[0].resolver_address == resolver


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.70 and 1.203.0.113.7", "203.0.113.70 and 1.203.0.113.7"),  # longer numbers are not ours
        ("ip.203.0.113.7.nip.example", f"ip.{SCRUBBED}.nip.example"),
        ("static-203-0-113-7.isp.example", f"static-{SCRUBBED}.isp.example"),
        ("::ffff:203.0.113.7", f"::ffff:{SCRUBBED}"),
        ("::ffff:cb00:7107", SCRUBBED),  # v4-mapped, hex form
        ("64:ff9b::cb00:7107", SCRUBBED),  # NAT64
        ("2002:cb00:7107::1", SCRUBBED),  # 6to4
        ("2001:0:c633:6401:0:ffff:34ff:8ef8", SCRUBBED),  # Teredo: the client's address with its bits flipped
        ("::cb00:7107", SCRUBBED),  # IPv4-compatible
        (
            "2002:cb00:7108::1 and 2001:0:c633:6401:0:ffff:34ff:8ef7",
            "2002:cb00:7108::1 and 2001:0:c633:6401:0:ffff:34ff:8ef7",
        ),
        ("2001%3Adb8%3A1%3A%3A7", SCRUBBED),  # percent-encoded in a URL
        ("7.113.0.203.in-addr.arpa.", SCRUBBED),
        # Another network's /64 is left alone; an address in our own /64 is ours (privacy addresses rotate).
        ("13:40:00 aa:bb:cc:dd:ee:ff 2001:db8:2::7", "13:40:00 aa:bb:cc:dd:ee:ff 2001:db8:2::7"),
        ("tmp 2001:db8:1:0:a1b2:c3d4:e5f6:1", "tmp [scrubbed]"),
    ],
)
def test_scrub_text_forms(text: str, expected: str) -> None:
    assert scrub_text(text, IDENTITY) == expected


def test_reverse_names_are_scrubbed_case_insensitively() -> None:
    identity = Identity.of(own_addresses=[OWN_V4], own_names=["Host-7.Dyn.ISP.example."])
    assert scrub_text("served to host-7.dyn.isp.example today", identity) == f"served to {SCRUBBED} today"
    assert scrub_text("xhost-7.dyn.isp.example", identity) == "xhost-7.dyn.isp.example"


def test_an_empty_identity_changes_nothing() -> None:
    m = make_measurement(echoing_keys(resolver="9.9.9.9:53"))
    assert anonymise(m, Identity()).to_json_bytes() == m.to_json_bytes()


def test_lan_address_classification() -> None:
    assert all(
        map(is_lan_address, ["192.168.1.1", "10.0.0.1", "172.16.0.1", "100.64.0.1", "fe80::1", "fd00::1"])
    )
    assert not any(map(is_lan_address, ["127.0.0.1", "::1", "9.9.9.9", "2606:4700::1111", "not an ip"]))


def test_no_host_name_user_home_or_device_id_in_a_built_measurement() -> None:
    entry = TestListEntry(url="http://echo.example/", category_code="NEWS")
    m = build_measurement(
        entry,
        echoing_keys(resolver="9.9.9.9:53"),
        started=T0,
        pass_started=T0,
        runtime=0.5,
        geolocation=Geolocation(
            probe_asn="AS64501", probe_cc="XL", probe_network_name="Example ISP", probe_ip=OWN_V4
        ),
    )
    clean = anonymise(m, IDENTITY)
    text = _text(clean)
    assert OWN_V4 not in text
    mac = f"{uuid.getnode():012x}"
    forbidden = [socket.gethostname(), socket.getfqdn(), getpass.getuser(), os.path.expanduser("~"), mac,
                 ":".join(mac[i : i + 2] for i in range(0, 12, 2))]  # fmt: skip
    for value in forbidden:
        if len(value) >= 4:  # a very short user name (e.g. "pi") could occur by chance in a URL
            assert value.lower() not in text.lower(), value
    assert set(json.loads(text)["annotations"]) == {"platform", "engine_name", "run_type", "category_code"}


LONG_FILLER = "lorem ipsum " * 200  # over the length at which texts are pre-filtered


@pytest.mark.parametrize(
    "spelling",
    [
        "203.000.113.007",  # zero-padded
        "2001:0db8:0001:0000:0000:0000:0000:0007",  # fully padded IPv6
        "2001:db8:1:0:0:0:0:7",
        "2001:DB8:1::7",
        "7.113.0.203.dyn.isp.example",  # reverse-DNS style host name
        "host-7-113-0-203.isp.example",
        "::ffff:203.0.113.7",
    ],
)
def test_long_texts_are_scrubbed_in_every_spelling(spelling: str) -> None:
    text = f"{LONG_FILLER} your address: {spelling} {LONG_FILLER}"
    scrubbed = scrub_text(text, IDENTITY)
    assert "[scrubbed]" in scrubbed
    assert spelling.lower() not in scrubbed.lower()


def test_a_mapped_own_address_also_scrubs_its_ipv4_form() -> None:
    identity = Identity.of(["::ffff:198.51.100.9"])
    assert scrub_text("seen from 198.51.100.9", identity) == "seen from [scrubbed]"


def test_dns_wire_hashes_are_never_kept() -> None:
    keys = echoing_keys()
    m = make_measurement(keys)
    assert any(r.wire_sha256 for q in m.test_keys.queries for r in q.replies)
    scrubbed = anonymise(m, IDENTITY)
    assert all(r.wire_sha256 is None for q in scrubbed.test_keys.queries for r in q.replies)


def test_a_wire_hash_that_happens_to_spell_our_address_is_dropped_and_changes_nothing_else() -> None:
    """Wire hashes are dropped unscanned: one holding a spelling of our address (here its hex form) gives
    what a measurement with an ordinary hash gives, on the fast path, with nothing scrubbed."""
    identity = Identity.of(own_addresses=["192.0.2.77"])  # not in the page
    raw = make_measurement(echoing_keys(resolver="9.9.9.9:53"))
    reply = raw.test_keys.queries[0].replies[0]
    spelled = "c000024d"  # 192.0.2.77 as one hex number: the scrubber would rewrite it
    replies = [reply.model_copy(update={"wire_sha256": spelled}), *raw.test_keys.queries[0].replies[1:]]
    query = raw.test_keys.queries[0].model_copy(update={"replies": replies})
    queries = [query, *raw.test_keys.queries[1:]]
    odd = raw.model_copy(update={"test_keys": raw.test_keys.model_copy(update={"queries": queries})})
    assert "c000024d" in _text(odd)
    assert anonymise(odd, identity).to_json_bytes() == anonymise(raw, identity).to_json_bytes()
    assert "c000024d" not in _text(anonymise(odd, identity)) and SCRUBBED not in _text(
        anonymise(odd, identity)
    )


@pytest.mark.parametrize(
    "spelling",
    [
        "64:ff9b::cb00:7107",
        "::ffff:cb00:7107",
        "::FFFF:CB00:7107",
        "2002:cb00:7107::1",
        "2001:0:c633:6401:0:ffff:34ff:8ef8",
        "2001:0:C633:6401::FFFF:34FF:8EF8",
    ],
)
def test_hex_spellings_of_our_ipv4_address_are_scrubbed_in_long_texts_too(spelling: str) -> None:
    identity = Identity.of(own_addresses=["203.0.113.7"])
    body = "x" * 5000 + f" client={spelling} " + "y" * 5000  # long: only scanned when the tells are there
    assert spelling.lower() not in scrub_text(body, identity).lower()
    assert SCRUBBED in scrub_text(body, identity)


def test_overlapping_names_are_each_removed_whole() -> None:
    identity = Identity.of(own_names=["foo.bar", "bar.baz.qux"])
    assert scrub_text("host foo.bar.baz.qux", identity) == f"host foo.{SCRUBBED}"


def test_a_measurement_holding_nothing_of_ours_comes_back_as_the_generic_walk_would_make_it() -> None:
    """The fast path (no string rewritten: no second validation) gives exactly what the generic path
    gives: the same measurement, its DNS wire hashes dropped."""
    from gatewatch.agent.anonymise import _scrubber

    raw = make_measurement(echoing_keys(resolver="9.9.9.9:53"))
    stranger = Identity.of(own_addresses=["192.0.2.77", "2001:db8:ffff::1"])
    assert any(reply.wire_sha256 for query in raw.test_keys.queries for reply in query.replies)
    fast = anonymise(raw, stranger)
    generic = Measurement.model_validate(_scrubber(stranger).value(raw.model_dump(mode="json")))
    assert fast == generic
    assert fast.to_json_bytes() == generic.to_json_bytes()
    assert all(reply.wire_sha256 is None for query in fast.test_keys.queries for reply in query.replies)
    assert raw.test_keys.queries[0].replies[0].wire_sha256 is not None  # the input is left as it was
    # One string of ours anywhere takes the generic path (scrubbed and validated again).
    assert _text(anonymise(raw, Identity.of(own_addresses=[OWN_V4]))).count(OWN_V4) == 0


_SCREENED_IDENTITY = Identity.of(
    own_addresses=[OWN_V4, OWN_V6, "198.51.100.7"],
    own_names=["customer-4711.isp.example"],
    lan_addresses=[LAN_RESOLVER, "10.1.2.3"],
)
_TELL_PIECES = sorted(
    {alternative for tell in _SCREENED_IDENTITY._tells for group in tell for alternative in group}
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_TELL_PIECES), st.text(max_size=6)), max_size=12))
def test_a_long_text_the_screen_clears_holds_no_tell(pieces) -> None:
    """The screen (anonymise._screen) only spares work: whatever holds a tell passes it."""
    from gatewatch.agent.anonymise import _screen, _screened, _told

    screen = _screen(_SCREENED_IDENTITY._tells)
    assert screen  # a handful of substrings, not the tells' every alternative
    lowered = "".join(pieces).lower()
    assert _screened(lowered, screen) or not _told(lowered, _SCREENED_IDENTITY._tells)


def test_long_texts_are_scrubbed_the_same_with_the_screen() -> None:
    """Long texts holding our address in several spellings, and ones that do not: same result as the
    tells alone (the screen off)."""
    from gatewatch.agent import anonymise as module

    texts = [
        "x" * 2000 + f" {OWN_V4} " + "y" * 10,
        "a" * 3000,
        "0" * 1500 + " 0x7f.65.0.10 ",
        f"{LAN_RESOLVER} " * 300,
        "ÿ" * 1100 + OWN_V6.upper(),
    ]
    screened = [scrub_text(text, _SCREENED_IDENTITY) for text in texts]
    scrubber = module._Scrubber(_SCREENED_IDENTITY)
    scrubber.screen = None  # every long text goes to the tells
    assert [scrubber.text(text) for text in texts] == screened
    assert screened[0] != texts[0] and screened[1] == texts[1]


@pytest.mark.parametrize("long", [False, True])
def test_our_address_backwards_is_scrubbed_in_every_inet_aton_form_in_long_texts_too(long: bool) -> None:
    """203.0.113.7 backwards is 7.113.0.203: as "7.113.203", "7.7405771" or one number it shares no
    tell with the address forwards, and a long text is scanned only on a tell."""
    identity = Identity.of(own_addresses=["203.0.113.7"])
    backwards = int(ipaddress.IPv4Address("7.113.0.203"))
    for spelling in (
        "7.113.0.203",
        "7.113.203",
        f"7.{backwards & 0xFFFFFF}",
        str(backwards),
        f"{backwards:x}",
    ):
        text = ("x" * 1100 if long else "") + f" seen as {spelling} "
        scrubbed = scrub_text(text, identity)
        assert spelling not in scrubbed and SCRUBBED in scrubbed, spelling


def test_the_screen_takes_of_each_tell_its_least_likely_group() -> None:
    """127.65.0.10 backwards starts with 10, "a" in hex: a screen of first groups would hold "a", which
    nearly every page holds, and clear no long text."""
    from gatewatch.agent.anonymise import _screen

    screen = _screen(Identity.of(own_addresses=["127.65.0.10"], lan_addresses=[LAN_RESOLVER])._tells)
    assert screen and all(len(alternative) > 1 for alternative in screen)


@settings(max_examples=300, deadline=None)
@given(st.integers(1 << 24, (1 << 32) - 1), st.lists(st.text(max_size=8), max_size=10))
def test_a_text_the_screen_clears_holds_no_tell_whatever_the_address(value: int, pieces: list[str]) -> None:
    """Whichever group of each tell the screen takes, whatever holds a tell passes it."""
    from gatewatch.agent.anonymise import _screen, _screened, _told

    identity = Identity.of(own_addresses=[str(ipaddress.IPv4Address(value))], lan_addresses=[LAN_RESOLVER])
    screen = _screen(identity._tells)
    alternatives = sorted({a for tell in identity._tells for group in tell for a in group})
    lowered = "".join(p + alternatives[len(p) % len(alternatives)] for p in pieces).lower()
    assert _screened(lowered, screen) or not _told(lowered, identity._tells)


@settings(max_examples=60, deadline=None)
@given(st.integers(1 << 24, (1 << 32) - 1), st.integers(1 << 24, (1 << 32) - 1), st.booleans())
def test_the_check_without_a_copy_agrees_with_the_walk(echoed: int, own: int, same: bool) -> None:
    """anonymise asks first, without building the walk's copy, whether the walk would rewrite anything:
    the answer (None, or the wire hashes it would drop) is what the walk itself finds."""
    from gatewatch.agent.anonymise import _Scrubber

    data = make_measurement(echoing_keys(v4=str(ipaddress.IPv4Address(echoed)))).model_dump(mode="json")
    identity = Identity.of(own_addresses=[str(ipaddress.IPv4Address(echoed if same else own))])
    check, walk = _Scrubber(identity), _Scrubber(identity)
    walk.value(data)
    assert check.hashes_if_unchanged(data) == (None if walk.changed else walk.hashes_cleared)
    if same:
        assert walk.changed


_TEREDO = "2001:0:c633:6401:0:ffff:"  # a Teredo server (198.51.100.1) and flags: the client follows
_V6_SEPARATORS = [":", "%3A", "%3a", "&#58;", "&colon;", "\\u003a", "-"]


@st.composite
def _mapped_echo(draw: st.DrawFn) -> tuple[Identity, str]:
    """An IPv4-only identity, and a text holding IPv6 tokens: v4-mapped, NAT64, IPv4-compatible, 6to4 and
    Teredo forms of its addresses
    (forwards, backwards, the LAN's) or of others, in any case, padding, compression and separator."""
    # Not 255.255.255.255: its Teredo form has no non-zero group, so the scan always runs (v6_groups None).
    own = ipaddress.IPv4Address(draw(st.integers(1 << 24, (1 << 32) - 2)))
    lan = ipaddress.IPv4Address(draw(st.integers(1 << 24, (1 << 32) - 2)))
    identity = Identity.of(own_addresses=[str(own)], lan_addresses=[str(lan)])
    backwards = ipaddress.IPv4Address(bytes(reversed(own.packed)))
    other = ipaddress.IPv4Address(draw(st.integers(0, (1 << 32) - 1)))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        v4 = draw(st.sampled_from([own, lan, backwards, other]))
        prefix = draw(
            st.sampled_from(
                ["::ffff:", "0:0:0:0:0:ffff:", "64:ff9b::", "64:ff9b:0:0:0:0:", "::", "2002:", _TEREDO]
            )
        )
        carried = int(v4) ^ 0xFFFFFFFF if prefix == _TEREDO else int(v4)  # Teredo flips the client's bits
        high, low = carried >> 16, carried & 0xFFFF
        pad = draw(st.integers(0, 4))
        token = prefix + f"{high:0{pad}x}:{low:0{pad}x}" + ("::1" if prefix == "2002:" else "")
        if low == 0 and draw(st.booleans()) and prefix not in ("::", "64:ff9b::", "2002:"):
            token = prefix + f"{high:x}::"
        token = token if draw(st.booleans()) else token.upper()
        token = token.replace(":", draw(st.sampled_from(_V6_SEPARATORS)))
        parts.append(draw(st.text(max_size=12)) + draw(st.sampled_from([" ", "[", "=", "\n"])) + token)
    return identity, "".join(parts) + draw(st.text(max_size=12))


@settings(max_examples=400, deadline=None)
@given(_mapped_echo())
def test_the_ipv6_scan_skipped_on_no_group_of_ours_changes_nothing(echo: tuple[Identity, str]) -> None:
    """With no IPv6 address of ours, the IPv6 scan runs only when the text holds the hex groups of one of
    our IPv4 addresses (anonymise._v6_groups): the same text comes out as with the scan always run."""
    from gatewatch.agent.anonymise import _Scrubber

    identity, text = echo
    gated, always = _Scrubber(identity), _Scrubber(identity)
    always.v6_groups = None
    assert gated.v6_groups is not None
    assert gated.text(text) == always.text(text)
    for long in (text * (1 + 1100 // max(1, len(text))),):
        assert gated.text(long) == always.text(long)


def test_the_ipv6_scan_always_runs_with_an_ipv6_address_of_ours() -> None:
    from gatewatch.agent.anonymise import _Scrubber

    assert _Scrubber(Identity.of(own_addresses=[OWN_V4, OWN_V6])).v6_groups is None
    assert _Scrubber(Identity.of(own_addresses=[OWN_V4], lan_addresses=["fd00::1"])).v6_groups is None
    text = "mapped ::ffff:cb00:7107 and 64-ff9b--CB00-7107"
    assert scrub_text(text, Identity.of([OWN_V4])).count(SCRUBBED) == 2


@pytest.mark.parametrize(
    "own", ["::ffff:203.0.113.7", "2002:cb00:7107::1", "2001:0:c633:6401:0:ffff:34ff:8ef8"]
)
def test_the_ipv4_address_inside_an_ipv6_address_of_ours_is_ours_too(own: str) -> None:
    identity = Identity.of(own_addresses=[own])
    assert scrub_text("seen from 203.0.113.7 and 7.113.0.203.in-addr.arpa", identity) == (
        f"seen from {SCRUBBED} and {SCRUBBED}"
    )

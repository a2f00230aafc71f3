"""Every spelling of the volunteer's address a server may echo back is scrubbed: IPv4 in every form inet_aton
accepts, with its dots escaped or replaced, as one number, in base64 at any alignment; IPv6 in its forms.
The class is covered by a property test: random own addresses, random spellings, random surrounding text."""

from __future__ import annotations

import base64
import ipaddress
import json
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.agent.anonymise import PRIVATE, SCRUBBED, Identity, scrub_text
from gatewatch.agent.spellings import V4_ANY, base64_cores, matches_v4, part_values, plain_quad

V4 = "127.65.0.10"
V6 = "2001:db8:1:2::7"
IDENTITY = Identity.of(own_addresses=[V4, V6])
FILLER = "lorem ipsum " * 200  # long texts are prefiltered: these must pass the filter too

V4_SPELLINGS = [
    "0x7f41000a",
    "7f41000a",
    "7F41000A",
    "0X7F41000A",
    "2134966282",
    "017720200012",  # octal, one number
    "0177.0101.0.012",  # octal-dotted
    "0x7f.0x41.0x0.0xa",
    "0x7f.65.0.012",  # mixed radix
    "127.65.10",  # three parts
    "127.4259850",  # two parts
    "0x7f.4259850",
    "127.065.000.010",  # zero-padded decimal
    "127%2E65%2E0%2E10",
    "127%2e65%2e0%2e10",
    "127%252E65%252E0%252E10",  # percent-encoded twice
    "127&#46;65&#46;0&#46;10",
    "127&#046;65&#046;0&#046;10",
    "127&#x2e;65&#x2E;0&#x2e;10",
    "127&period;65&period;0&period;10",
    "127\\u002e65\\u002e0\\u002e10",  # a JSON escape, as text
    "127\uff0e65\uff0e0\uff0e10",  # full-width full stops
    "127 65 0 10",
    "127,65,0,10",
    "127, 65, 0, 10",
    "127_65_0_10",
    "127:65:0:10",
    "127-65-0-10",
    "10.0.65.127",  # reversed (reverse-DNS style)
]
V6_SPELLINGS = [
    V6,
    "2001:0DB8:0001:0002:0000:0000:0000:0007",
    "2001%3Adb8%3A1%3A2%3A%3A7",
    "2001%253Adb8%253A1%253A2%253A%253A7",
    "[2001:db8:1:2::7%25eth0]",
    "2001:db8:1:2::7%eth0",
    "2001-db8-1-2--7",
    "2001&#58;db8&#58;1&#58;2&#58;&#58;7",
    "2001&colon;db8&colon;1&colon;2&colon;&colon;7",
    "2001\\u003adb8\\u003a1\\u003a2\\u003a\\u003a7",
    "20010db8000100020000000000000007",  # 32 hex digits
    "20010DB80001000200000000000000AB",  # another address of our /64
    "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2",
    "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
    "2001:db8:1:2:a1b2:c3d4:e5f6:1",  # a privacy address of our /64
]


@pytest.mark.parametrize("long", [False, True])
@pytest.mark.parametrize("spelling", V4_SPELLINGS + V6_SPELLINGS)
def test_every_spelling_is_scrubbed(spelling: str, long: bool) -> None:
    text = f"{FILLER if long else ''}seen as <b>{spelling}</b>; {FILLER if long else ''}"
    scrubbed = scrub_text(text, IDENTITY)
    assert spelling not in scrubbed
    assert SCRUBBED in scrubbed


@pytest.mark.parametrize("address", [V4, V6, "2001:0db8:0001:0002:0000:0000:0000:0007"])
@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc"])  # every alignment inside the encoded text
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_of_the_address_inside_a_token_is_scrubbed(address: str, prefix: str, encode) -> None:  # type: ignore[no-untyped-def]
    token = encode(json.dumps({"u": prefix, "ip": address, "exp": 1}).encode()).decode().rstrip("=")
    for text in (f"Set-Cookie: session={token}; Path=/", f"{FILLER} <input value='{token}'> {FILLER}"):
        scrubbed = scrub_text(text, IDENTITY)
        assert token not in scrubbed
        assert SCRUBBED in scrubbed


def test_a_lan_address_in_a_new_spelling_becomes_private() -> None:
    identity = Identity.of(own_addresses=[V4], lan_addresses=["192.168.1.254"])
    assert scrub_text("gw=192%2E168%2E1%2E254", identity) == f"gw={PRIVATE}"
    assert scrub_text("gw=0xc0a801fe", identity) == f"gw={PRIVATE}"


@pytest.mark.parametrize(
    "text",
    [
        "127.65.0.100",
        "1.127.65.0.10",  # a longer dotted run is not our address
        "127.65.0.10.5",
        "version 1.2.3",
        "2026-11-23T13:40:00Z",
        "12:30",
        "0x7f41000b",
        "21349662820",
        "ab7f41000acd",  # inside a longer hex string (a hash)
        "01a241eb-a1c8-7d1c-88ae-874d7c4956d4",
        "2001:db8:1:3::7",  # another /64
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert scrub_text(text, IDENTITY) == text


def test_part_values_read_as_inet_aton_does() -> None:
    assert part_values("010") == {10, 8}  # zero-padded decimal, or octal
    assert part_values("0x1F") == {31}
    assert part_values("08") == {8}  # not octal
    assert part_values("127") == {127}


@given(st.binary(max_size=8), st.text(min_size=1, max_size=40), st.binary(max_size=8))
@settings(max_examples=200, deadline=None)
def test_a_base64_core_is_in_every_encoding_that_holds_the_text(
    before: bytes, text: str, after: bytes
) -> None:
    encoded = base64.b64encode(before + text.encode() + after).decode()
    cores = base64_cores(text)
    if len(text.encode()) >= 3:  # shorter texts may have no character of their own
        assert any(core and core in encoded for core in cores)


def _v4_spellings(ip: ipaddress.IPv4Address) -> list[str]:
    a, b, c, d = ip.packed
    value = int(ip)
    dotted = [str(a), str(b), str(c), str(d)]
    return [
        str(ip),
        f"0x{value:08x}",
        f"{value:x}".upper(),
        str(value),
        ".".join(f"0{o:o}" if o else "0" for o in ip.packed),
        ".".join(f"0x{o:x}" for o in ip.packed),
        f"{a}.{b}.{(c << 8) | d}",
        "%2E".join(dotted),
        "%2e".join(dotted),
        "&#46;".join(dotted),
        "&#x2E;".join(dotted),
        "&period;".join(dotted),
        "\\u002e".join(dotted),
        " ".join(dotted),
        ",".join(dotted),
        "_".join(dotted),
        ":".join(dotted),
        "-".join(dotted),
        urllib.parse.quote(str(ip), safe="").replace(".", "%2E"),
    ]


def _v6_spellings(ip: ipaddress.IPv6Address) -> list[str]:
    return [
        str(ip),
        ip.exploded.upper(),
        str(ip).replace(":", "%3A"),
        ip.exploded.replace(":", "%3a"),
        str(ip).replace(":", "-"),
        str(ip).replace(":", "&#58;"),
        ip.exploded.replace(":", ""),
        ip.reverse_pointer,
        ip.reverse_pointer.removesuffix(".ip6.arpa"),
        f"[{ip}%25wlan0]",
    ]


_public_v4 = st.integers(1 << 24, (1 << 32) - 1).map(ipaddress.IPv4Address)
_v6 = st.integers(1 << 125, (1 << 126) - 1).map(ipaddress.IPv6Address)
_around = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_fence = st.sampled_from(["\n", "<p>", '"', "'", "=", "|", "(", ")"])  # ends a number in any spelling


@st.composite
def _echo(draw: st.DrawFn) -> tuple[str, str, str]:
    """(own address, the spelling a server used, the text it sent)."""
    if draw(st.booleans()):
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = draw(_public_v4)
        forms = _v4_spellings(ip)  # type: ignore[arg-type]
    else:
        ip = draw(_v6)
        forms = _v6_spellings(ip)  # type: ignore[arg-type]
    spelling = draw(st.sampled_from(forms))
    if draw(st.integers(0, 4)) == 0:  # inside a base64 token (a cookie, a JWT)
        inner = draw(_around) + str(ip) + draw(_around)
        spelling = base64.b64encode(inner.encode()).decode()
    text = draw(_around) + draw(_fence) + spelling + draw(_fence) + draw(_around)
    if draw(st.booleans()):
        text = FILLER + text + FILLER
    return str(ip), spelling, text


@given(_echo())
@settings(max_examples=300, deadline=None)
def test_no_spelling_of_a_random_own_address_survives_in_random_text(echo: tuple[str, str, str]) -> None:
    address, spelling, text = echo
    scrubbed = scrub_text(text, Identity.of(own_addresses=[address]))
    assert spelling not in scrubbed
    assert SCRUBBED in scrubbed


def test_a_hex_spelling_without_any_digit_is_scrubbed() -> None:
    identity = Identity.of(own_addresses=["255.255.255.250"])
    assert scrub_text("\nFFFFFFFA\n", identity) == f"\n{SCRUBBED}\n"


_OCTET_SPELLINGS = st.one_of(
    st.integers(0, 999).map(str),  # plain (and too large)
    st.integers(0, 255).map(lambda n: f"0{n:o}"),  # octal
    st.integers(0, 255).map(lambda n: f"0x{n:x}"),  # hex
    st.integers(0, 255).map(lambda n: f"{n:03d}"),  # zero-padded
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_OCTET_SPELLINGS, min_size=2, max_size=4),
    st.sampled_from([".", "%2e", "-", " ", "&#46;"]),
    st.integers(0, 2**32 - 1),
)
def test_a_plain_dotted_quad_reads_as_the_one_address_matches_v4_finds(parts, sep, other) -> None:
    """The scrubber's shortcut (agent/anonymise.py): when ``plain_quad`` gives a value, ``matches_v4``
    matches that address and no other; for any other spelling it gives none and the full reading runs."""
    for match in V4_ANY.finditer("x " + sep.join(parts) + " y"):
        value = plain_quad(match)
        if value is None:
            plain = sep == "." and len(parts) == 4
            plain = plain and all(p.isdecimal() and int(p) < 256 and (p == "0" or p[0] != "0") for p in parts)
            assert not plain or match.group(0) != ".".join(parts)
            continue
        assert matches_v4(match, value)
        assert matches_v4(match, other) == (other == value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="0123456789abcdefABCDEF", max_size=5), min_size=3, max_size=9),
    st.sampled_from([":", "-", "%3A", "&#58;"]),
)
def test_a_v6_shaped_token_without_eight_groups_or_a_double_colon_is_no_address(groups, sep) -> None:
    """The scrubber's shortcut (agent/anonymise.py _v6): such a token is left without parsing it, and
    parsing it would indeed fail."""
    from gatewatch.agent.identity import parse_address
    from gatewatch.agent.spellings import V6_ANY, v6_normalised

    for match in V6_ANY.finditer("x " + sep.join(groups) + " y"):
        normalised = v6_normalised(match.group(0))
        if "::" not in normalised and normalised.count(":") != 7:
            assert parse_address(normalised) is None

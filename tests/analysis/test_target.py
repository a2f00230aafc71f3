"""``normalise_ip`` answers exactly as parsing every text with ``ipaddress`` did (IPv4 shortcut included)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.analysis.target import normalise_ip


def _by_parsing(value: str) -> str:
    text = value.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


_OCTET = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(0, 999).map(lambda n: f"{n:03d}"),  # leading zeros
    st.sampled_from(["", "-1", "256", "1e2", "0x1f", "١٢", "²", " 1", "1 "]),
)
_IPV4ISH = st.lists(_OCTET, min_size=1, max_size=6).map(".".join)
_IPV6 = st.ip_addresses(v=6).map(str)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_IPV4ISH, _IPV6, _IPV6.map(str.upper), st.ip_addresses(v=4).map(str), st.text(max_size=20)))
def test_the_same_as_parsing_every_text(value: str) -> None:
    for spelled in (value, f" {value} ", f"[{value}]"):
        assert normalise_ip(spelled) == _by_parsing(spelled), spelled


def test_known_spellings() -> None:
    assert normalise_ip("192.0.2.1") == "192.0.2.1"
    assert normalise_ip("192.000.2.1") == "192.000.2.1"  # not an address to Python: left as it is
    assert normalise_ip("[2001:DB8::0:1]") == "2001:db8::1"
    mapped = "::ffff:192.0.2.1"  # Python's own spelling of it changed in 3.13: whatever it is, unchanged
    assert normalise_ip(mapped) == _by_parsing(mapped) == str(ipaddress.ip_address(mapped))
    assert normalise_ip(" example.org ") == "example.org"

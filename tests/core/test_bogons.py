from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.core.bogons import is_bogon, is_bogon_remembered


@pytest.mark.parametrize(
    "address",
    ["10.10.34.35", "127.0.0.1", "0.0.0.0", "192.168.1.1", "172.16.0.1", "169.254.1.1", "100.64.0.1",
     "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1", "not-an-ip",
     # IPv6 forms carrying a private or loopback IPv4 address, and reserved IPv6 space
     "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "2002:7f00:1::1", "::7f00:1", "::a00:1", "::ffff:0:a00:1",
     "fec0::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "::", "3fff::1", "fe80::1%eth0", "198.51.100.7"],
)  # fmt: skip
def test_bogons(address: str) -> None:
    assert is_bogon(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:4700::6810:85e5", "1.1.1.1", "64:ff9b::5db8:d822", "2002:5db8:d822::1"]
)
def test_routable(address: str) -> None:
    assert not is_bogon(address)


def test_lab_ranges_can_be_declared_routable() -> None:
    assert not is_bogon("127.80.0.3", routable=("127.0.0.0/8",))
    assert is_bogon("10.10.34.35", routable=("127.0.0.0/8",))
    assert not is_bogon("::ffff:127.80.0.3", routable=("127.0.0.0/8",))


def _embeddings(v4: ipaddress.IPv4Address) -> dict[str, str]:
    """Every IPv6 form that carries ``v4`` and routes somewhere else than ``v4`` itself."""
    n = int(v4)
    teredo_client = n ^ 0xFFFFFFFF  # Teredo stores the client address inverted, in the last 32 bits
    return {
        "compatible": str(ipaddress.IPv6Address(n)),
        "nat64": str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | n)),
        "nat64-local": str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b:1::")) | n)),
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1)),
        "teredo": str(ipaddress.IPv6Address((0x20010000 << 96) | (0x7F000001 << 64) | teredo_client)),
    }


_LOOPBACK_V4 = st.integers(
    int(ipaddress.IPv4Address("127.0.0.0")), int(ipaddress.IPv4Address("127.255.255.255"))
)


@given(_LOOPBACK_V4)
@settings(max_examples=100, deadline=None)
def test_an_ipv4_range_never_allows_an_ipv6_form_embedding_its_addresses(n: int) -> None:
    """Lab mode (--control-allow-net 127.0.0.0/8): the IPv4 host is allowed, an IPv6 address embedding it
    is not (a connection to it goes to a translator or relay, not to that host)."""
    v4 = ipaddress.IPv4Address(n)
    assert not is_bogon(str(v4), routable=("127.0.0.0/8",))
    for form, address in _embeddings(v4).items():
        assert is_bogon(address, routable=("127.0.0.0/8",)), form


def test_the_issues_examples_are_not_allowed_by_an_ipv4_range() -> None:
    for address in ("::7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::1"):
        assert is_bogon(address, routable=("127.0.0.0/8",))
        assert not is_bogon(address, routable=(f"{address}/128",))  # an IPv6 range allows them


def test_ipv4_mapped_is_the_ipv4_address_itself() -> None:
    """Decided: ``::ffff:a.b.c.d`` is how a dual-stack socket spells the IPv4 host (a connection reaches
    exactly it), so the IPv4 ranges allow it, as they allow the host, and nothing more."""
    assert not is_bogon("::ffff:127.0.0.1", routable=("127.0.0.0/8",))
    assert is_bogon("::ffff:127.0.0.1", routable=("127.80.0.0/16",))
    assert is_bogon("::ffff:10.0.0.1", routable=("127.0.0.0/8",))
    assert not is_bogon("::ffff:127.0.0.1", routable=("::ffff:127.0.0.0/104",))


def test_an_ipv6_range_allows_only_ipv6_addresses() -> None:
    assert is_bogon("127.0.0.1", routable=("::/0",))  # every IPv6 address, and still no IPv4 one
    assert is_bogon("127.0.0.1", routable=("::1/128",))
    assert not is_bogon("::1", routable=("::1/128",))
    assert is_bogon("::1", routable=("127.0.0.0/8",))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
        st.ip_addresses(v=6).map(lambda ip: f"{ip}%eth0"),
        st.text(max_size=20),
        st.text("0123456789abcdef:.", min_size=65, max_size=80),  # longer than any address: not remembered
    ),
    st.sampled_from([(), ("127.0.0.0/8",), ("10.0.0.0/8", "2001:db8::/32")]),
)
def test_the_remembered_bogon_test_is_is_bogon(address: str, routable: tuple[str, ...]) -> None:
    """Asked twice (the second answer remembered), the same answer as is_bogon."""
    assert is_bogon_remembered(address, routable) == is_bogon(address, routable)
    assert is_bogon_remembered(address, routable) == is_bogon(address, routable)

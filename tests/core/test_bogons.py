from __future__ import annotations

import pytest

from gatewatch.core.bogons import is_bogon


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

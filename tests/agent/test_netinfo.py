"""Learning the machine's own addresses without sending anything (synthetic tables; route lookups toward
loopback only)."""

from __future__ import annotations

import ipaddress

from gatewatch.agent.anonymise import PRIVATE, SCRUBBED, Identity, scrub_text
from gatewatch.agent.locate import classify_own_addresses
from gatewatch.agent.netinfo import global_v6_addresses, machine_addresses

# Synthetic addresses: never contacted, only parsed.
PUBLIC_V6 = "2a00:5555:1:2:1c2d:3e4f:5a6b:7c8d"  # a privacy address
IF_INET6 = (
    "2a00555500010002 1c2d3e4f5a6b7c8d 02 40 00 01 eth0\n"  # malformed: the address split in two
    "2a005555000100021c2d3e4f5a6b7c8d 02 40 00 01 eth0\n"  # global, temporary
    "fd12345678900001000000000000000a 02 40 00 80 eth0\n"  # ULA: global scope, but a LAN address
    "fe80000000000000021122fffe334455 02 40 20 80 eth0\n"  # link-local
    "00000000000000000000000000000001 01 80 10 80 lo\n"  # loopback
)


def test_global_v6_addresses_come_from_the_interface_table() -> None:
    assert global_v6_addresses(IF_INET6) == [PUBLIC_V6, "fd12:3456:7890:1::a"]
    assert global_v6_addresses("") == [] and global_v6_addresses("zz" * 16 + " 02 40 00 01 eth0") == []


def test_machine_addresses_from_routes_and_the_table(tmp_path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(IF_INET6)
    found = machine_addresses(("127.0.0.1", "127.0.0.1", "not an address"), table)
    assert found == ["127.0.0.1", PUBLIC_V6, "fd12:3456:7890:1::a"]
    assert machine_addresses(("127.0.0.1",), tmp_path / "absent") == ["127.0.0.1"]


def test_own_addresses_are_split_into_public_and_lan() -> None:
    public, lan = classify_own_addresses(
        ["127.0.0.1", PUBLIC_V6, "fd12:3456:7890:1::a", "192.168.1.20", "9.9.9.9"]
    )
    assert public == [PUBLIC_V6, "9.9.9.9"] and lan == ["fd12:3456:7890:1::a", "192.168.1.20"]


def test_a_learned_ipv6_address_scrubs_its_whole_64() -> None:
    public, lan = classify_own_addresses(global_v6_addresses(IF_INET6))
    identity = Identity.of(own_addresses=public, lan_addresses=lan)
    rotated = "2a00:5555:1:2::beef"  # the next privacy address in the same /64
    neighbour = "2a00:5555:1:3::beef"  # another /64: someone else
    text = f"seen from {rotated.upper()} and [{PUBLIC_V6}]:443; {neighbour}; dns fd12:3456:7890:1::a"
    assert (
        scrub_text(text, identity) == f"seen from {SCRUBBED} and [{SCRUBBED}]:443; {neighbour}; dns {PRIVATE}"
    )
    assert identity.replacement(ipaddress.ip_address(neighbour)) is None

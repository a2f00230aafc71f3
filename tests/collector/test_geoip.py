"""GeoDB against tiny ip-location-db CSVs and MMDB files written here (no real database is shipped)."""

from __future__ import annotations

import gc
import gzip
import ipaddress
import socket
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.collector.geoip import GeoDB, GeoDBError, GeoInfo

UNKNOWN = GeoInfo(None, None, None)

# Documentation ranges (RFC 5737, RFC 3849) stand in for real networks: nothing here is sent anywhere.
ASN_V4 = """\
192.0.2.0,192.0.2.127,64501,"Example Transit, Inc."
192.0.2.128,192.0.2.255,64502,Example Mobile
198.51.100.0,198.51.100.255,64503,"Quote ""Q"" Net"
"""
ASN_V6 = "2001:db8::,2001:db8:0:ffff:ffff:ffff:ffff:ffff,64510,Example Six\n"
COUNTRY = """\
192.0.2.0,192.0.2.255,KH
198.51.100.0,198.51.100.255,MM
2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,TH
"""


def _ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def _ip_text(number: int) -> str:
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def _write(path: Path, text: str, *, compress: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def csv_db(tmp_path: Path) -> GeoDB:
    return GeoDB.load(
        asn_files=[_write(tmp_path / "asn-ipv4.csv", ASN_V4), _write(tmp_path / "asn-ipv6.csv", ASN_V6)],
        country_files=[_write(tmp_path / "geo-whois-asn-country.csv", COUNTRY)],
    )


def test_csv_lookup_ipv4_and_ipv6(csv_db: GeoDB) -> None:
    assert csv_db.lookup("192.0.2.1") == GeoInfo(64501, "KH", "Example Transit, Inc.")
    assert csv_db.lookup("192.0.2.200") == GeoInfo(64502, "KH", "Example Mobile")
    assert csv_db.lookup("198.51.100.7") == GeoInfo(64503, "MM", 'Quote "Q" Net')
    assert csv_db.lookup("2001:db8::1") == GeoInfo(64510, "TH", "Example Six")
    # In the country file only: the ASN part stays unknown.
    assert csv_db.lookup("2001:db8:1::1") == GeoInfo(None, "TH", None)


def test_csv_ranges_are_inclusive(csv_db: GeoDB) -> None:
    assert csv_db.lookup("192.0.2.0").asn == 64501
    assert csv_db.lookup("192.0.2.127").asn == 64501
    assert csv_db.lookup("192.0.2.128").asn == 64502
    assert csv_db.lookup("192.0.2.255").asn == 64502
    assert csv_db.lookup("192.0.1.255") == UNKNOWN
    assert csv_db.lookup("192.0.3.0") == UNKNOWN
    assert csv_db.lookup("198.51.101.0") == UNKNOWN


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(csv_db: GeoDB) -> None:
    # What a dual-stack listener reports for an IPv4 client.
    assert csv_db.lookup("::ffff:192.0.2.1") == csv_db.lookup("192.0.2.1")
    assert csv_db.lookup("::ffff:c000:201").asn == 64501


@pytest.mark.parametrize(
    "bad",
    ["", "bogus", "192.0.2", "192.0.2.1.5", "999.0.2.1", "192.0.2.1/24", " 192.0.2.1", "2001:db8::g"]
    + ["1" * 500, None, 3221225985, b"192.0.2.1", ["192.0.2.1"], "\x00", "192.0.2.1\n"],
)
def test_bad_input_never_raises(csv_db: GeoDB, bad: Any) -> None:
    assert csv_db.lookup(bad) == UNKNOWN


def test_zone_index_is_ignored(tmp_path: Path) -> None:
    db = GeoDB.load(country_files=[_write(tmp_path / "c.csv", "fe80::,fe80::ffff,ZA\n")])
    assert db.lookup("fe80::1%eth0").cc == "ZA"


def test_empty_database_knows_nothing() -> None:
    assert GeoDB.load().lookup("192.0.2.1") == UNKNOWN


def test_header_gzip_and_numeric_files(tmp_path: Path) -> None:
    header = "ip_range_start,ip_range_end,autonomous_system_number,autonomous_system_organization\n"
    v4_num = f"{_ip_int('192.0.2.0')},{_ip_int('192.0.2.255')},64520,Num Four\n"
    v6_num = f"{_ip_int('2001:db8::')},{_ip_int('2001:db8::ffff')},64521,Num Six\n"
    # A small IPv6 integer is IPv6 only because the file name says so.
    v6_small = "1,1,64522,Loopback Six\n"
    country = "ip_range_start,ip_range_end,country_code\n192.0.2.0,192.0.2.255,kh\n"
    db = GeoDB.load(
        asn_files=[
            _write(tmp_path / "asn-ipv4-num.csv.gz", header + v4_num, compress=True),
            _write(tmp_path / "asn-ipv6-num.csv", v6_num + v6_small),
            # No family in the name: told apart by size.
            _write(
                tmp_path / "mixed-num.csv", f"{_ip_int('2001:db8:1::')},{_ip_int('2001:db8:1::ff')},6453,X\n"
            ),
        ],
        country_files=[_write(tmp_path / "country.csv.gz", country, compress=True)],
    )
    assert db.lookup("192.0.2.9") == GeoInfo(64520, "KH", "Num Four")
    assert db.lookup("2001:db8::42") == GeoInfo(64521, None, "Num Six")
    assert db.lookup("::1") == GeoInfo(64522, None, "Loopback Six")
    assert db.lookup("0.0.0.1") == UNKNOWN
    assert db.lookup("2001:db8:1::1").asn == 6453


def test_city_format_gives_its_country(tmp_path: Path) -> None:
    city = "192.0.2.0,192.0.2.255,KH,Phnom Penh,,Phnom Penh,,11.55,104.91,Asia/Phnom_Penh\n"
    db = GeoDB.load(country_files=[_write(tmp_path / "dbip-city-ipv4.csv", city)])
    assert db.lookup("192.0.2.3") == GeoInfo(None, "KH", None)


def test_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = (
        "192.0.2.0,192.0.2.255,64501,Good\n"
        "not-an-ip,192.0.2.255,64502,Bad start\n"
        "198.51.100.9,198.51.100.0,64503,Reversed\n"
        "198.51.100.0,2001:db8::,64504,Mixed families\n"
        "203.0.113.0,203.0.113.255,ASX,Bad number\n"
        "203.0.113.0,203.0.113.255,0,Unrouted\n"
        "203.0.113.0\n"
        "\n"
        "203.0.113.0,203.0.113.255,AS64505,Prefixed, unquoted comma\n"
    )
    db = GeoDB.load(asn_files=[_write(tmp_path / "asn.csv", rows)])
    assert db.lookup("192.0.2.1").asn == 64501
    assert db.lookup("198.51.100.5") == UNKNOWN
    assert db.lookup("203.0.113.1") == GeoInfo(64505, None, "Prefixed, unquoted comma")
    assert "6 rows skipped" in db.describe()[0]


def test_unusable_files_fail_at_load_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(GeoDBError, match="missing.csv"):
        GeoDB.load(asn_files=[tmp_path / "missing.csv"])
    with pytest.raises(GeoDBError, match="countries.csv"):
        # A country file given as the ASN database: no row has an ASN.
        GeoDB.load(asn_files=[_write(tmp_path / "countries.csv", COUNTRY)])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4 + b"1.2.3.4," + b"x" * 200_000)  # NULs, a field over csv's limit
    with pytest.raises(GeoDBError, match="junk.bin"):
        GeoDB.load(country_files=[junk])
    with pytest.raises(GeoDBError, match="broken.mmdb"):
        GeoDB.load(asn_files=[_write(tmp_path / "broken.mmdb", "not a database")])


def test_nested_ranges_the_more_specific_wins(tmp_path: Path) -> None:
    # As in geo-whois-asn-country: a GeoFeed /29 inside a whois /24, listed after it.
    rows = "192.0.2.0,192.0.2.255,DE\n192.0.2.40,192.0.2.47,TR\n192.0.2.48,192.0.2.55,GR\n"
    db = GeoDB.load(country_files=[_write(tmp_path / "c.csv", rows)])
    got = {last: db.lookup(f"192.0.2.{last}").cc for last in (0, 39, 40, 47, 48, 55, 56, 255)}
    assert got == {0: "DE", 39: "DE", 40: "TR", 47: "TR", 48: "GR", 55: "GR", 56: "DE", 255: "DE"}
    assert "2 overlaps" in db.describe()[0]


def test_first_file_of_a_role_wins_and_others_fill_gaps(tmp_path: Path) -> None:
    first = _write(tmp_path / "curated.csv", "192.0.2.0,192.0.2.127,64600,Curated\n")
    second = _write(tmp_path / "general.csv", "192.0.2.0,192.0.2.255,64601,General\n")
    db = GeoDB.load(asn_files=[first, second])
    assert db.lookup("192.0.2.1").asn == 64600
    assert db.lookup("192.0.2.200").asn == 64601


# Ranges over a small space so that they nest and overlap often; the reference answer is written the
# simple way: of the ranges holding the address, the one starting last (then the narrowest, then the
# one listed last) decides.
_ranges = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 60), st.sampled_from(["AA", "BB", "CC", "DD"])),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ranges=_ranges, probes=st.lists(st.integers(0, 400), min_size=1, max_size=30))
def test_lookup_matches_brute_force(
    tmp_path_factory: pytest.TempPathFactory, ranges: list, probes: list
) -> None:
    base = _ip_int("198.51.100.0")  # offsets up to 400: within 198.51.100.0/23
    rows = [(base + start, base + start + width, cc) for start, width, cc in ranges]
    text = "".join(f"{_ip_text(s)},{_ip_text(e)},{cc}\n" for s, e, cc in rows)
    path = tmp_path_factory.mktemp("prop") / "c.csv"
    if not rows:
        text = "192.0.2.0,192.0.2.0,ZA\n"  # a file needs one usable row
    db = GeoDB.load(country_files=[_write(path, text)])
    for offset in probes:
        number = base + offset
        holding = [(s, -e, i, cc) for i, (s, e, cc) in enumerate(rows) if s <= number <= e]
        expected = max(holding)[3] if holding else None
        assert db.lookup(_ip_text(number)).cc == expected


# Not followed: plain values, and code (its constants, this test's own literal, are not the db's state).
_LEAVES = (str, bytes, int, float, type(None), type, types.ModuleType, types.FunctionType)


def _reachable(root: object, limit: int = 200_000) -> list[object]:
    """Every object reachable from ``root`` through its data (containers, attributes), bounded."""
    seen: set[int] = set()
    stack, found = [root], []
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        if isinstance(obj, _LEAVES):
            continue
        if isinstance(obj, dict):
            stack.extend(obj)  # gc does not report a dict's string keys
        stack.extend(gc.get_referents(obj))
    return found


def test_looked_up_address_is_not_kept(tmp_path: Path) -> None:
    # 198.51.100.77 is in no range boundary, so neither its text nor its number has a reason to stay.
    db = GeoDB.load(
        asn_files=[_write(tmp_path / "asn.csv", ASN_V4)],
        country_files=[_write(tmp_path / "c.csv", COUNTRY)],
    )
    address = "".join(["198.51.100.", "77"])  # built at run time: not an interned constant of this module
    assert db.lookup(address).cc == "MM"
    kept = _reachable(db)
    assert not any(isinstance(o, str) and "198.51.100.77" in o for o in kept)
    assert _ip_int("198.51.100.77") not in {o for o in kept if type(o) is int}


# --- MMDB -----------------------------------------------------------------------------------------
# A minimal MaxMind DB writer (format spec 2.0): a binary search tree of 24-bit records, a data section
# and a metadata map. Enough for maps, strings and unsigned integers; the real `maxminddb` reader
# (its C extension) reading these files back is what checks the writer.


def _mmdb_control(type_id: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 285:
        head, extra = 29, bytes([size - 29])
    else:
        head, extra = 30, (size - 285).to_bytes(2, "big")
    if type_id <= 7:
        return bytes([(type_id << 5) | head]) + extra
    return bytes([head, type_id - 7]) + extra  # extended type


def _mmdb_encode(value: Any) -> bytes:
    if isinstance(value, tuple):  # (type_id, int): an explicitly typed unsigned integer
        type_id, number = value
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        return _mmdb_control(type_id, len(raw)) + raw
    if isinstance(value, int):
        return _mmdb_encode((6, value))  # uint32
    if isinstance(value, str):
        raw = value.encode()
        return _mmdb_control(2, len(raw)) + raw
    if isinstance(value, list):
        return _mmdb_control(11, len(value)) + b"".join(_mmdb_encode(v) for v in value)
    assert isinstance(value, dict)
    body = b"".join(_mmdb_encode(str(k)) + _mmdb_encode(v) for k, v in value.items())
    return _mmdb_control(7, len(value)) + body


def write_mmdb(path: Path, networks: list[tuple[str, dict]], *, ip_version: int = 6) -> Path:
    """Networks must not nest (enough for these tests)."""
    bits = 128 if ip_version == 6 else 32
    nodes: list[list[Any]] = [[None, None]]
    data, offsets = bytearray(), {}
    for cidr, record in networks:
        net = ipaddress.ip_network(cidr)
        prefix, address = net.prefixlen, int(net.network_address)
        if net.version == 4 and ip_version == 6:
            prefix += 96  # IPv4 lives at ::/96 in an IPv6 tree
        key = repr(record)
        if key not in offsets:
            offsets[key] = len(data)
            data += _mmdb_encode(record)
        node = 0
        for depth in range(prefix):
            bit = (address >> (bits - 1 - depth)) & 1
            if depth == prefix - 1:
                nodes[node][bit] = ("data", offsets[key])
            else:
                if not isinstance(nodes[node][bit], int):
                    nodes.append([None, None])
                    nodes[node][bit] = len(nodes) - 1
                node = nodes[node][bit]
    count = len(nodes)

    def record_value(entry: Any) -> int:
        if entry is None:
            return count  # "no data"
        return entry if isinstance(entry, int) else count + 16 + entry[1]

    tree = b"".join(record_value(a).to_bytes(3, "big") + record_value(b).to_bytes(3, "big") for a, b in nodes)
    metadata = {
        "node_count": (6, count),
        "record_size": (5, 24),
        "ip_version": (5, ip_version),
        "database_type": "gatewatch-test",
        "languages": ["en"],
        "binary_format_major_version": (5, 2),
        "binary_format_minor_version": (5, 0),
        "build_epoch": (9, 1_700_000_000),
        "description": {"en": "test database"},
    }
    path.write_bytes(tree + bytes(16) + bytes(data) + b"\xab\xcd\xefMaxMind.com" + _mmdb_encode(metadata))
    return path


ASN_NETWORKS = [
    ("192.0.2.0/25", {"autonomous_system_number": 64501, "autonomous_system_organization": "Example, Inc."}),
    ("198.51.100.0/24", {"autonomous_system_number": 64503}),
    ("2001:db8::/48", {"autonomous_system_number": 64510, "autonomous_system_organization": "Six"}),
]
GEOLITE_COUNTRY = [
    ("192.0.2.0/24", {"country": {"iso_code": "KH", "names": {"en": "Cambodia"}}}),
    ("198.51.100.0/24", {"registered_country": {"iso_code": "MM"}}),
    ("2001:db8::/32", {"country": {"iso_code": "TH"}}),
]


def test_mmdb_asn_and_geolite_country(tmp_path: Path) -> None:
    with GeoDB.load(
        asn_files=[write_mmdb(tmp_path / "asn.mmdb", ASN_NETWORKS)],
        country_files=[write_mmdb(tmp_path / "country.mmdb", GEOLITE_COUNTRY)],
    ) as db:
        assert db.lookup("192.0.2.5") == GeoInfo(64501, "KH", "Example, Inc.")
        assert db.lookup("192.0.2.200") == GeoInfo(None, "KH", None)
        assert db.lookup("198.51.100.1") == GeoInfo(64503, "MM", None)
        assert db.lookup("2001:db8::9") == GeoInfo(64510, "TH", "Six")
        assert db.lookup("::ffff:192.0.2.5").asn == 64501
        assert db.lookup("203.0.113.1") == UNKNOWN
        assert db.lookup("not an address") == UNKNOWN


def test_mmdb_flat_country_code_detected_by_content(tmp_path: Path) -> None:
    # ip-location-db's MMDB builds carry a flat `country_code`; the file name here hides the format.
    path = write_mmdb(tmp_path / "country.db", [("192.0.2.0/24", {"country_code": "kh"})], ip_version=4)
    with GeoDB.load(country_files=[path]) as db:
        assert db.lookup("192.0.2.1").cc == "KH"
        assert db.lookup("2001:db8::1") == UNKNOWN  # an IPv4-only tree knows no IPv6
        assert db.describe() == ["country: country.db: mmdb gatewatch-test"]


def test_gzipped_mmdb_and_mixed_with_csv(tmp_path: Path) -> None:
    mmdb = write_mmdb(tmp_path / "asn.mmdb", ASN_NETWORKS)
    packed = tmp_path / "asn.mmdb.gz"
    packed.write_bytes(gzip.compress(mmdb.read_bytes()))
    with GeoDB.load(
        asn_files=[packed, _write(tmp_path / "asn-ipv4.csv", ASN_V4)],
        country_files=[_write(tmp_path / "c.csv", COUNTRY)],
    ) as db:
        assert db.lookup("192.0.2.1") == GeoInfo(64501, "KH", "Example, Inc.")  # the MMDB, listed first
        assert db.lookup("192.0.2.200") == GeoInfo(64502, "KH", "Example Mobile")  # the CSV fills the gap

"""FingerprintDB on the real public database (../shared) and on the project's shipped files.

The public database is reference data beside the clone: its tests skip (saying why) when it is absent.
The shipped files are packaged data: their tests fail when one is missing.

Every row of the public database is matched against a synthetic response built from its own pattern,
and against a near miss that must not match it. The oracle is plain Python (``in``, ``startswith``,
``re.search``), independent of the database's word index.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from importlib import resources
from pathlib import Path

import pytest

from gatewatch.analysis import FingerprintDB, load_default_fingerprints
from gatewatch.analysis.fingerprints import BlockingFingerprint, parse_csv
from gatewatch.core.observations import HTTPResponse

HTTP_ROWS = 1729
DNS_ROWS = 226
# Rows of the public database whose regexp does not compile under Python's re (none at commit 171641e).
UNCOMPILABLE: frozenset[str] = frozenset()
HEADER = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,"
    "source,exp_url,notes\n"
)


@pytest.fixture(scope="module")
def public_db(shared_data: Path) -> FingerprintDB:
    folder = shared_data / "blocking-fingerprints"
    return FingerprintDB.load(folder / "fingerprints_http.csv", folder / "fingerprints_dns.csv")


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_public_database_loads_completely(public_db: FingerprintDB, shared_data: Path) -> None:
    assert len(public_db.http_rows) == HTTP_ROWS - len(UNCOMPILABLE)
    assert len(public_db.dns_rows) == DNS_ROWS
    assert {r.name for r in public_db.rejected} == UNCOMPILABLE
    assert len(public_db) == HTTP_ROWS + DNS_ROWS - len(UNCOMPILABLE)
    raw = _raw_rows(shared_data / "blocking-fingerprints" / "fingerprints_http.csv")
    # Patterns are kept byte for byte (some start or end with whitespace or CRLF).
    assert [r.pattern for r in public_db.http_rows] == [r["pattern"] for r in raw]
    assert {r.scope for r in public_db.http_rows} >= {"nat", "isp", "prod", "inst", "vbw", "fp"}
    assert all(r.regexp is not None for r in public_db.http_rows if r.pattern_type == "regexp")


def _text_matching(pattern: str) -> str:
    """A string the regular expressions of the database match: ``.*`` and ``.`` become one letter,
    escapes become the escaped character (the constructs those rows use)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
        elif pattern.startswith(".*", i):
            out.append("q")
            i += 2
        elif ch == ".":
            out.append("q")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _value_and_near_miss(row: BlockingFingerprint) -> tuple[str, str]:
    p = row.pattern
    if row.pattern_type == "full":
        return p, p + "x"
    if row.pattern_type == "prefix":
        return p + "/more", "x" + p  # contains it, but does not start with it
    if row.pattern_type == "contains":
        # Glued to word characters on both sides, so the pattern's edge words are not whole words.
        return "zz" + p + "zz", "zz" + p[: len(p) // 2] + p[len(p) // 2 + 1 :] + "zz"
    text = _text_matching(p)
    return "zz " + text + " zz", text[1:]


def _names(db: FingerprintDB, response: HTTPResponse) -> set[str]:
    return {m.name for m in db.matches_http(response)}


def _oracle(row: BlockingFingerprint, value: str) -> bool:
    if row.pattern_type == "full":
        return value == row.pattern
    if row.pattern_type == "prefix":
        return value.startswith(row.pattern)
    if row.pattern_type == "contains":
        return row.pattern in value
    return re.search(row.pattern, value) is not None


def test_every_http_row_matches_its_pattern_and_not_a_near_miss(public_db: FingerprintDB) -> None:
    tried: set[tuple[str, str]] = set()
    for row in public_db.http_rows:
        value, near = _value_and_near_miss(row)
        assert _oracle(row, value) and not _oracle(row, near), row.name  # the test's own inputs are right
        if row.location == "body":
            hit, miss = HTTPResponse(code=200, body=value), HTTPResponse(code=200, body=near)
        else:
            # Header names are matched case-insensitively: send them upper-cased.
            name = row.location.removeprefix("header.").upper()
            hit, miss = (
                HTTPResponse(code=302, headers=[(name, value)]),
                HTTPResponse(code=302, headers=[(name, near)]),
            )
        assert row.name in _names(public_db, hit), row.name
        assert row.name not in _names(public_db, miss), row.name
        tried.add((row.location.split(".")[0], row.pattern_type))
    # Every kind present in the database was exercised.
    assert tried == {
        ("body", "contains"),
        ("body", "regexp"),
        ("body", "full"),
        ("header", "prefix"),
        ("header", "contains"),
        ("header", "full"),
    }


def test_a_header_row_does_not_match_the_body_or_another_header(public_db: FingerprintDB) -> None:
    row = next(
        r for r in public_db.http_rows if r.location == "header.location" and r.pattern_type == "prefix"
    )
    assert row.name not in _names(public_db, HTTPResponse(code=200, body=row.pattern + "/x"))
    assert row.name not in _names(
        public_db, HTTPResponse(code=200, headers=[("Refresh", row.pattern + "/x")])
    )


def test_every_dns_row_matches_its_address_and_not_a_neighbour(public_db: FingerprintDB) -> None:
    patterns = {r.pattern for r in public_db.dns_rows}
    kinds: set[str] = set()
    for row in public_db.dns_rows:
        found = public_db.match_dns(row.pattern)
        assert found is not None
        # Several rows may name one address; the best of them is returned.
        assert found.name in {r.name for r in public_db.dns_rows if r.pattern == row.pattern}
        try:
            ip = ipaddress.ip_address(row.pattern)
        except ValueError:  # a CNAME target's host name: matched without case or a trailing dot
            assert public_db.match_dns(row.pattern.upper() + ".") == found
            neighbour = "x" + row.pattern
        else:
            neighbour = str(ip + 1) if str(ip + 1) not in patterns else str(ip - 1)
        if neighbour not in patterns:
            assert public_db.match_dns(neighbour) is None, neighbour
        kinds.add("name" if neighbour.startswith("x") else "address")
    assert kinds == {"name", "address"}


def test_strong_rows_win_over_false_positives(public_db: FingerprintDB) -> None:
    fp_row = next(r for r in public_db.http_rows if r.scope == "fp" and r.pattern_type == "contains")
    strong = next(r for r in public_db.http_rows if r.scope == "nat" and r.location == "body")
    body = f"{fp_row.pattern} and {strong.pattern}"
    best = public_db.match_http(HTTPResponse(code=200, body=body))
    assert best is not None and best.name == strong.name and best.strength == "strong"
    alone = public_db.match_http(HTTPResponse(code=200, body=fp_row.pattern))
    assert alone is not None and alone.strength == "benign"


def test_a_one_mebibyte_page_without_blockpage_text_matches_nothing_blocking(
    public_db: FingerprintDB,
) -> None:
    body = (
        "<div class='post'><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p></div>\n" * 12000
    )[: 1 << 20]
    found = public_db.matches_http(HTTPResponse(code=200, body=body, body_length=len(body)))
    assert [m for m in found if m.strength != "benign"] == []


def test_bad_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    http = tmp_path / "http.csv"
    http.write_text(
        HEADER
        + "good,nat,,body,contains,Blocked by order,5,XL,t,,\n"
        + "bad_regexp,nat,,body,regexp,(unclosed,5,XL,t,,\n"
        + "bad_type,nat,,body,glob,*x*,5,XL,t,,\n"
        + "bad_location,nat,,cookie,contains,x,5,XL,t,,\n"
        + "empty,nat,,body,contains,,5,XL,t,,\n",
        encoding="utf-8",
    )
    db = FingerprintDB.load(http, None)
    assert [r.name for r in db.http_rows] == ["good"]
    assert {r.name: r.line for r in db.rejected} == {
        "bad_regexp": 3,
        "bad_type": 4,
        "bad_location": 5,
        "empty": 6,
    }
    assert "compile" in next(r.reason for r in db.rejected if r.name == "bad_regexp")


def test_a_file_without_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="missing columns"):
        parse_csv("a,b,c\n1,2,3\n", "http")


def test_dns_addresses_are_compared_in_canonical_form() -> None:
    rows, _ = parse_csv(HEADER + "v6,nat,,dns,full,2001:DB8:0:0::1,5,,t,,\n", "dns")
    db = FingerprintDB(dns=rows)
    found = db.match_dns("2001:db8::1")
    assert found is not None and found.name == "v6"


def test_confidence_orders_strong_matches() -> None:
    rows, _ = parse_csv(
        HEADER + "low,isp,,body,contains,Blocked,5,,t,,\nhigh,nat,,body,contains,Blocked here,10,,t,,\n",
        "http",
    )
    best = FingerprintDB(http=rows).match_http(HTTPResponse(code=200, body="Blocked here."))
    assert best is not None and best.name == "high"


def _shipped(name: str) -> Path:
    # Packaged data is part of the package: a missing file is a packaging error, so it fails, never skips.
    path = resources.files("gatewatch.analysis") / "data" / name
    assert path.is_file(), f"the packaged {name} is missing from gatewatch.analysis"
    return Path(str(path))


def test_shipped_files_load() -> None:
    http, dns = _shipped("fingerprints_http.csv"), _shipped("fingerprints_dns.csv")
    db = FingerprintDB.load(http, dns)
    assert db.rejected == ()
    assert len(db.http_rows) == len(_raw_rows(http))
    assert len(db.dns_rows) == len(_raw_rows(dns))
    default = load_default_fingerprints()
    assert len(default) == len(db)

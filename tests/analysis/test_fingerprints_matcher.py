"""The fingerprint matcher gives exactly the results of the matcher it replaced (kept here as the oracle).

The oracle is the word-set index the package used before it learned to test a small database's rows
directly, plus a plain loop over every row: both must agree with ``FingerprintDB.matches_http`` on OONI's
public database (skipped when ../shared is absent), on the shipped files, and on slices of the public
database small and large enough to take either path, for known bodies (each row's own pattern, near
misses) and random bodies stitched from pieces of patterns (hypothesis, bounded).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewatch.analysis import FingerprintDB, load_default_fingerprints
from gatewatch.analysis.fingerprints import BlockingFingerprint, FingerprintMatch
from gatewatch.core.observations import HTTPResponse

_WORD = re.compile(r"\w+")
_ORDER = {"strong": 0, "vague": 1, "benign": 2}


def _required_word(pattern: str) -> str | None:
    inner = [m.group() for m in _WORD.finditer(pattern) if m.start() > 0 and m.end() < len(pattern)]
    return max(inner, key=len) if inner else None


class _OldBodyIndex:
    """The body matcher as it was before the direct path (commit 2ff53b6), verbatim in behaviour."""

    def __init__(self, rows: Sequence[tuple[int, BlockingFingerprint]]) -> None:
        self.by_word: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        self.always: list[tuple[int, BlockingFingerprint]] = []
        self.full: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        for index, row in rows:
            if row.pattern_type == "full":
                self.full.setdefault(row.pattern, []).append((index, row))
                continue
            word = _required_word(row.pattern) if row.pattern_type == "contains" else None
            if word is None:
                self.always.append((index, row))
            else:
                self.by_word.setdefault(word, []).append((index, row))

    def matches(self, body: str) -> list[tuple[int, BlockingFingerprint]]:
        found = list(self.full.get(body, ()))
        found.extend((i, row) for i, row in self.always if row.matches(body))
        words = set(_WORD.findall(body))
        for word in words & self.by_word.keys():
            found.extend((i, row) for i, row in self.by_word[word] if row.pattern in body)
        return found


class _OldMatcher:
    """``FingerprintDB.matches_http`` as it was (commit 2ff53b6), built once per database."""

    def __init__(self, db: FingerprintDB) -> None:
        indexed = list(enumerate(db.http_rows))
        self.body = _OldBodyIndex([(i, r) for i, r in indexed if r.location == "body"])
        self.headers: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        for i, row in indexed:
            if row.location.startswith("header."):
                self.headers.setdefault(row.location.removeprefix("header."), []).append((i, row))

    def matches_http(self, response: HTTPResponse) -> list[FingerprintMatch]:
        found: list[tuple[int, BlockingFingerprint]] = []
        if response.body:
            found.extend(self.body.matches(response.body))
        for name, value in response.headers:
            found.extend((i, row) for i, row in self.headers.get(name.lower(), ()) if row.matches(value))
        unique = {i: row for i, row in found}
        ranked = sorted(
            unique.items(), key=lambda item: (_ORDER[item[1].strength], -item[1].confidence_no_fp, item[0])
        )
        return [FingerprintMatch.of(row) for _, row in ranked]


_OLD: dict[int, _OldMatcher] = {}


def _plain_loop(db: FingerprintDB, response: HTTPResponse) -> set[str]:
    """Names of every matching row, one row at a time (no index at all)."""
    names = {
        r.name for r in db.http_rows if r.location == "body" and response.body and r.matches(response.body)
    }
    for name, value in response.headers:
        names |= {r.name for r in db.http_rows if r.location == f"header.{name.lower()}" and r.matches(value)}
    return names


def _agree(db: FingerprintDB, response: HTTPResponse, *, plain: bool = True) -> list[FingerprintMatch]:
    old = _OLD.get(id(db)) or _OLD.setdefault(id(db), _OldMatcher(db))
    found = db.matches_http(response)
    assert found == old.matches_http(response)
    if plain:
        assert {m.name for m in found} == _plain_loop(db, response)
    return found


@pytest.fixture(scope="module")
def public_db(shared_data: Path) -> FingerprintDB:
    folder = shared_data / "blocking-fingerprints"
    return FingerprintDB.load(folder / "fingerprints_http.csv", folder / "fingerprints_dns.csv")


@pytest.fixture(scope="module")
def databases(public_db: FingerprintDB) -> list[FingerprintDB]:
    """The public database, slices of it on either side of the direct path's threshold, the shipped one."""
    body_rows = [r for r in public_db.http_rows if r.location == "body"]
    header_rows = [r for r in public_db.http_rows if r.location != "body"]
    small = FingerprintDB(body_rows[:40] + header_rows[:20])
    middle = FingerprintDB(body_rows[:130])
    dbs = [public_db, small, middle, load_default_fingerprints()]
    _OLD.update((id(db), _OldMatcher(db)) for db in dbs)
    assert small._body.direct is not None and public_db._body.direct is None  # both paths are taken
    return dbs


def test_each_row_pattern_and_near_misses_give_the_old_results(databases: list[FingerprintDB]) -> None:
    public = databases[0]
    hits = 0
    for row in public.http_rows:
        for body in (
            row.pattern,
            f"<p>{row.pattern}</p>",
            row.pattern[1:],
            row.pattern[:-1],
            row.pattern.upper(),
        ):
            for db in databases:
                hits += bool(_agree(db, HTTPResponse(code=200, body=body), plain=False))
        if row.location != "body":
            name = row.location.removeprefix("header.")
            for db in databases:
                _agree(
                    db,
                    HTTPResponse(code=302, headers=[(name.title(), row.pattern)], body="moved"),
                    plain=False,
                )
    assert hits > len(public.http_rows)  # the known bodies do match: the comparison is not vacuous


def test_a_body_with_many_blockpages_ranks_as_before(databases: list[FingerprintDB]) -> None:
    public = databases[0]
    body = " ".join(r.pattern for r in public.http_rows[::7] if r.location == "body")
    for db in databases:
        found = _agree(db, HTTPResponse(code=200, body=body))
        assert db is not public or len(found) > 10


@st.composite
def _bodies(draw: st.DrawFn, patterns: list[str]) -> str:
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(patterns),
                st.sampled_from(patterns).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: p[:n])),
                st.sampled_from(patterns).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: p[n:])),
                st.text(max_size=30),
            ),
            max_size=8,
        )
    )
    separator = draw(st.sampled_from(["", " ", "\n", "<br>", "x"]))
    return separator.join(pieces)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_random_bodies_give_the_old_results(databases: list[FingerprintDB]) -> None:
    patterns = [r.pattern for r in databases[0].http_rows]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=_bodies(patterns), header=st.sampled_from(patterns))
    def check(body: str, header: str) -> None:
        response = HTTPResponse(code=200, body=body, headers=[("Location", header), ("Server", header)])
        for db in databases:
            _agree(db, response)

    check()

"""Blocking fingerprints in OONI's CSV format (github.com/ooni/blocking-fingerprints).

A fingerprint recognises a censor by what it leaves behind: a blockpage's text (``body``), a response
header (``header.<name>``, name matched case-insensitively), or a DNS answer pointing at a blocking
server (``dns``: an address, or the host name a CNAME points to). Patterns are ``full`` (equal),
``prefix``, ``contains`` or ``regexp`` (``re.search``, compiled once; a row whose expression does not
compile is reported in :attr:`FingerprintDB.rejected`, not fatal, so a newer copy of the public
database with one bad row still loads).

``scope`` is kept as the database has it (nat, isp, prod, inst, vbw, fp, ...). Rows with scope ``fp``
(known false positives) or ``injb`` (benign injections, such as a router's update notice) are matched
but never make a verdict of blocking; ``vbw`` (vague blocking words) only names a blockpage that the
page comparison already found different (see :attr:`FingerprintMatch.strength`).

Matching a 1 MiB body against ~1,300 ``contains`` rows with one ``in`` each costs about 0.25 s, so body
rows are grouped: each pattern that holds a whole word (a run of ``\\w`` bounded inside the pattern by
other characters) is only tried when the body's set of words has that word, because any occurrence of
the pattern in the body has it as a whole word too. One ``re.findall`` builds that set. Building it costs
about as much as a hundred ``in`` tests, so a database with fewer word-indexed rows than that (the
project's own files hold one) tests each of them directly and never builds the set.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final, Literal

from gatewatch.core.observations import HTTPResponse

__all__ = [
    "COLUMNS",
    "BlockingFingerprint",
    "FingerprintDB",
    "FingerprintMatch",
    "RejectedRow",
    "load_default_fingerprints",
    "parse_csv",
]

log = logging.getLogger(__name__)

COLUMNS: Final[tuple[str, ...]] = (
    "name",
    "scope",
    "other_names",
    "location_found",
    "pattern_type",
    "pattern",
    "confidence_no_fp",
    "expected_countries",
    "source",
    "exp_url",
    "notes",
)
PatternType = Literal["full", "prefix", "contains", "regexp"]
Strength = Literal["strong", "vague", "benign"]
_PATTERN_TYPES: Final = frozenset({"full", "prefix", "contains", "regexp"})
_BENIGN_SCOPES: Final = frozenset({"fp", "injb"})
_VAGUE_SCOPES: Final = frozenset({"vbw"})
_WORD: Final = re.compile(r"\w+")
_DEFAULT_CONFIDENCE: Final = 5
# Below this many word-indexed body rows, one ``in`` per row is cheaper than building the body's word set
# (measured by bench/fingerprints.py: the set costs ~40 ns per body character, an ``in`` ~0.3 ns).
_WORD_INDEX_MIN_ROWS: Final = 100


@dataclass(frozen=True, slots=True)
class BlockingFingerprint:
    """One row of the database."""

    name: str
    scope: str
    location: str  # "body", "header.<lower-case name>" or "dns"
    pattern_type: PatternType
    pattern: str
    confidence_no_fp: int = _DEFAULT_CONFIDENCE
    other_names: tuple[str, ...] = ()
    expected_countries: tuple[str, ...] = ()
    source: str = ""
    exp_url: str = ""
    notes: str = ""
    regexp: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def strength(self) -> Strength:
        if self.scope in _BENIGN_SCOPES:
            return "benign"
        return "vague" if self.scope in _VAGUE_SCOPES else "strong"

    def matches(self, value: str) -> bool:
        """Whether ``value`` (a body, a header value, an address) matches this row's pattern."""
        if self.pattern_type == "full":
            return value == self.pattern
        if self.pattern_type == "prefix":
            return value.startswith(self.pattern)
        if self.pattern_type == "contains":
            return self.pattern in value
        return self.regexp is not None and self.regexp.search(value) is not None


@dataclass(frozen=True, slots=True)
class FingerprintMatch:
    name: str
    scope: str
    location: str
    pattern_type: PatternType
    confidence_no_fp: int
    # "strong" rows may decide blocking; "vague" ones only name an already-detected blockpage;
    # "benign" ones (known false positives, benign injections) never make a verdict of blocking.
    strength: Strength

    @classmethod
    def of(cls, row: BlockingFingerprint) -> FingerprintMatch:
        return cls(row.name, row.scope, row.location, row.pattern_type, row.confidence_no_fp, row.strength)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    source: str  # file name (or "<text>")
    line: int  # line number in the file (the header is line 1)
    name: str
    reason: str


_STRENGTH_ORDER: Final[dict[Strength, int]] = {"strong": 0, "vague": 1, "benign": 2}


def _priority(row: BlockingFingerprint, index: int) -> tuple[int, int, int]:
    # The best match: strong rows before vague before benign, then the most confident, then file order.
    return (_STRENGTH_ORDER[row.strength], -row.confidence_no_fp, index)


def _required_word(pattern: str) -> str | None:
    """The longest whole word inside ``pattern`` (not touching either end), or None if it has none."""
    inner = [m.group() for m in _WORD.finditer(pattern) if m.start() > 0 and m.end() < len(pattern)]
    return max(inner, key=len) if inner else None


def _normalise_address(value: str) -> str:
    """IPs in canonical form; anything else is a host name (DNS rows also name CNAME targets)."""
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.rstrip(".").lower()


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class _BodyIndex:
    """Body rows, grouped so that most ``contains`` rows are skipped by a word-set lookup."""

    def __init__(self, rows: Sequence[tuple[int, BlockingFingerprint]]) -> None:
        self.by_word: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        self.always: list[tuple[int, BlockingFingerprint]] = []  # tried on every body
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
        # Few word-indexed rows: each is tested with one ``in`` (the word set would cost more than them all).
        indexed = [entry for entries in self.by_word.values() for entry in entries]
        self.direct: list[tuple[int, BlockingFingerprint]] | None = (
            sorted(indexed, key=lambda entry: entry[0]) if len(indexed) < _WORD_INDEX_MIN_ROWS else None
        )

    def matches(self, body: str) -> list[tuple[int, BlockingFingerprint]]:
        """Every body row matching ``body``, in no particular order (the caller ranks them)."""
        found = list(self.full.get(body, ()))
        found.extend((i, row) for i, row in self.always if row.matches(body))
        if self.direct is not None:
            found.extend((i, row) for i, row in self.direct if row.pattern in body)
            return found
        by_word = self.by_word
        for word in by_word.keys() & set(_WORD.findall(body)):
            found.extend((i, row) for i, row in by_word[word] if row.pattern in body)
        return found


class FingerprintDB:
    """HTTP and DNS blocking fingerprints, indexed for matching. Immutable once built."""

    def __init__(
        self,
        http: Iterable[BlockingFingerprint] = (),
        dns: Iterable[BlockingFingerprint] = (),
        rejected: Iterable[RejectedRow] = (),
    ) -> None:
        self.http_rows: tuple[BlockingFingerprint, ...] = tuple(http)
        self.dns_rows: tuple[BlockingFingerprint, ...] = tuple(dns)
        self.rejected: tuple[RejectedRow, ...] = tuple(rejected)
        indexed = list(enumerate(self.http_rows))
        self._body = _BodyIndex([(i, r) for i, r in indexed if r.location == "body"])
        self._headers: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        for i, row in indexed:
            if row.location.startswith("header."):
                self._headers.setdefault(row.location.removeprefix("header."), []).append((i, row))
        self._dns_full: dict[str, list[tuple[int, BlockingFingerprint]]] = {}
        self._dns_other: list[tuple[int, BlockingFingerprint]] = []
        for i, row in enumerate(self.dns_rows):
            if row.pattern_type == "full":
                self._dns_full.setdefault(_normalise_address(row.pattern), []).append((i, row))
            else:
                self._dns_other.append((i, row))

    @classmethod
    def load(cls, http_csv: Path | None = None, dns_csv: Path | None = None) -> FingerprintDB:
        """Read the two CSV files (either may be None). A file without the expected columns raises
        ValueError; a bad row is skipped and listed in ``rejected``."""
        http: list[BlockingFingerprint] = []
        dns: list[BlockingFingerprint] = []
        rejected: list[RejectedRow] = []
        for path, into, kind in ((http_csv, http, "http"), (dns_csv, dns, "dns")):
            if path is None:
                continue
            # newline="": a pattern's own CRLF is part of the blockpage text, not a line ending to translate.
            with Path(path).open(encoding="utf-8", newline="") as handle:
                text = handle.read()
            rows, bad = parse_csv(text, kind, source=Path(path).name)
            into.extend(rows)
            rejected.extend(bad)
        for bad in rejected:
            log.warning("fingerprint %s (%s line %d) skipped: %s", bad.name, bad.source, bad.line, bad.reason)
        return cls(http, dns, rejected)

    def __len__(self) -> int:
        return len(self.http_rows) + len(self.dns_rows)

    def matches_http(self, response: HTTPResponse) -> list[FingerprintMatch]:
        """Every row that matches the response's body or headers, best first."""
        found: list[tuple[int, BlockingFingerprint]] = []
        if response.body:
            found.extend(self._body.matches(response.body))
        headers = self._headers
        if headers:
            for name, value in response.headers:
                for i, row in headers.get(name.lower(), ()):
                    if row.matches(value):
                        found.append((i, row))
        if not found:
            return []
        unique = {i: row for i, row in found}
        ranked = sorted(unique.items(), key=lambda item: _priority(item[1], item[0]))
        return [FingerprintMatch.of(row) for _, row in ranked]

    def match_http(self, response: HTTPResponse) -> FingerprintMatch | None:
        """The best matching row (strong before vague before benign), or None."""
        found = self.matches_http(response)
        return found[0] if found else None

    def match_dns(self, address: str) -> FingerprintMatch | None:
        """The best DNS row matching an answer: an IP address, or a CNAME's target name. None if none."""
        normalised = _normalise_address(address)
        found = list(self._dns_full.get(normalised, ()))
        found.extend((i, row) for i, row in self._dns_other if row.matches(normalised))
        if not found:
            return None
        index, row = min(found, key=lambda item: _priority(item[1], item[0]))
        return FingerprintMatch.of(row)


def _row_from_record(record: Mapping[str, str], kind: Literal["http", "dns"]) -> BlockingFingerprint | str:
    """A fingerprint, or the reason the record cannot be one."""
    name = (record.get("name") or "").strip()
    location = (record.get("location_found") or "").strip().lower()
    pattern_type = (record.get("pattern_type") or "").strip().lower()
    # The pattern is kept byte for byte: some blockpage texts begin or end with whitespace.
    pattern = record.get("pattern") or ""
    if not name:
        return "no name"
    if pattern_type not in _PATTERN_TYPES:
        return f"unknown pattern_type {pattern_type!r}"
    if not pattern:
        return "empty pattern (it would match everything)"
    if kind == "dns" and location != "dns":
        return f"location {location!r} in the DNS file"
    if kind == "http" and location != "body" and not (location.startswith("header.") and len(location) > 7):
        return f"location {location!r} in the HTTP file"
    compiled = None
    if pattern_type == "regexp":
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            return f"regexp does not compile: {exc}"
    try:
        confidence = int((record.get("confidence_no_fp") or "").strip() or _DEFAULT_CONFIDENCE)
    except ValueError:
        confidence = _DEFAULT_CONFIDENCE
    return BlockingFingerprint(
        name=name,
        scope=(record.get("scope") or "").strip().lower(),
        location=location,
        pattern_type=pattern_type,  # type: ignore[arg-type]  # checked against _PATTERN_TYPES above
        pattern=pattern,
        confidence_no_fp=confidence,
        other_names=_split_list(record.get("other_names") or ""),
        expected_countries=_split_list(record.get("expected_countries") or ""),
        source=(record.get("source") or "").strip(),
        exp_url=(record.get("exp_url") or "").strip(),
        notes=(record.get("notes") or "").strip(),
        regexp=compiled,
    )


def parse_csv(
    text: str, kind: Literal["http", "dns"], source: str = "<text>"
) -> tuple[list[BlockingFingerprint], list[RejectedRow]]:
    """Parse one fingerprints CSV. Raises ValueError when a required column is missing."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"name", "scope", "location_found", "pattern_type", "pattern"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: not a blocking-fingerprints CSV, missing columns {sorted(missing)}")
    rows: list[BlockingFingerprint] = []
    rejected: list[RejectedRow] = []
    for record in reader:
        parsed = _row_from_record(record, kind)
        if isinstance(parsed, str):
            rejected.append(RejectedRow(source, reader.line_num, record.get("name") or "", parsed))
        else:
            rows.append(parsed)
    return rows, rejected


@cache
def load_default_fingerprints() -> FingerprintDB:
    """The project's own fingerprint files shipped in ``gatewatch.analysis`` (``data/*.csv``)."""
    data = resources.files("gatewatch.analysis") / "data"
    paths = [data / "fingerprints_http.csv", data / "fingerprints_dns.csv"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"the shipped fingerprint file {path} is missing (a packaging error)")
    with resources.as_file(paths[0]) as http_csv, resources.as_file(paths[1]) as dns_csv:
        return FingerprintDB.load(http_csv, dns_csv)

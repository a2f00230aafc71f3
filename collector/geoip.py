"""IP → ASN, country and network name, from databases the operator supplies.

Two kinds of file are read:

* the ip-location-db CSVs (the ``@ip-location-db/asn`` and ``@ip-location-db/geo-whois-asn-country``
  packages): rows ``ip_range_start,ip_range_end,autonomous_system_number,autonomous_system_organization``
  or ``ip_range_start,ip_range_end,country_code`` with inclusive ranges, given as addresses
  (``1.0.0.0``) or as integers (the ``-num`` files), IPv4 or IPv6, optionally gzip-compressed, with or
  without a header line. The country column is the third one, so the ip-location-db city files work too;
* MaxMind DB files (GeoLite2/DB-IP style), through the ``maxminddb`` package.

CSV ranges are kept as sorted integer arrays and found with :func:`bisect.bisect_right`, so a lookup
is one address parse and one binary search.

Privacy: the address handed to :meth:`GeoDB.lookup` is used for that lookup only. It is not logged,
not cached (a per-IP cache would be a table of who asked), and never put into an exception message.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import ipaddress
import os
import socket
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import maxminddb

from gatewatch.core.vocabulary import WITHHELD_CC

__all__ = ["GeoDB", "GeoDBError", "GeoInfo"]

Role = Literal["asn", "country"]

_GZIP_MAGIC = b"\x1f\x8b"
# The MMDB metadata section starts with this marker, within the last 128 KiB of the file (the spec).
_MMDB_MARKER = b"\xab\xcd\xefMaxMind.com"
_MMDB_TAIL = 128 * 1024
_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_V4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96


@dataclass(frozen=True)
class GeoInfo:
    asn: int | None = None
    cc: str | None = None
    network_name: str | None = None


_UNKNOWN = GeoInfo(None, None, None)


class GeoDBError(Exception):
    """A database file the operator named cannot be used (the operator's fault, raised at load only)."""


def _parse_ip(text: object) -> tuple[int, int] | None:
    """``(version, integer)`` for an address string, ``None`` for anything else.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack listener reports for an IPv4
    client) is looked up as the IPv4 address it carries. A zone (``fe80::1%eth0``) is ignored.
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        if ":" in text:
            number = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
            if number >> 32 == 0xFFFF:
                return 4, number & _V4_MAX
            return 6, number
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


class _RangeTable:
    """Inclusive ranges of one address family, each pointing at one value, made disjoint on load."""

    def __init__(self, version: int) -> None:
        self._wide = version == 6
        # IPv4 fits unsigned 64-bit arrays (compact); IPv6 needs Python ints.
        self._starts: array[int] | list[int] = [] if self._wide else array("Q")
        self._ends: array[int] | list[int] = [] if self._wide else array("Q")
        self._value_ids = array("I")
        self._values: list[Any] = []
        self._value_index: dict[Any, int] = {}
        self._ordered = True  # by (start, wider first): the order the sweep in finish() needs
        self._max_end = -1
        self.overlaps = 0

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, start: int, end: int, value: Any) -> None:
        if self._starts and (start, -end) < (self._starts[-1], -self._ends[-1]):
            self._ordered = False
        if start <= self._max_end:
            self.overlaps += 1
        self._max_end = max(self._max_end, end)
        value_id = self._value_index.get(value)
        if value_id is None:
            value_id = self._value_index[value] = len(self._values)
            self._values.append(value)
        self._starts.append(start)
        self._ends.append(end)
        self._value_ids.append(value_id)

    def finish(self) -> None:
        """Make the ranges disjoint so that one bisect finds the answer.

        Real files nest ranges: geo-whois-asn-country puts a /29 of one country inside a /26 of
        another (GeoFeed overriding whois). The more specific range wins, as a longest-prefix match
        would decide; where two ranges only partly overlap, the one that starts later wins the overlap.
        """
        self._value_index = {}  # only needed while loading
        if self.overlaps == 0 and self._ordered:
            return
        rows = zip(self._starts, self._ends, self._value_ids, strict=True)
        ordered = list(rows) if self._ordered else sorted(rows, key=lambda r: (r[0], -r[1]))
        starts: array[int] | list[int] = [] if self._wide else array("Q")
        ends: array[int] | list[int] = [] if self._wide else array("Q")
        ids = array("I")

        def emit(low: int, high: int, value_id: int) -> None:
            if ends and ids[-1] == value_id and ends[-1] + 1 == low:
                ends[-1] = high  # the two pieces of an outer range may touch again: keep one
            else:
                starts.append(low)
                ends.append(high)
                ids.append(value_id)

        open_ranges: list[tuple[int, int]] = []  # (end, value_id); innermost last
        position = 0  # first address not yet given to a range
        for start, end, value_id in (*ordered, (_V6_MAX + 2, _V6_MAX + 2, 0)):
            while open_ranges and position < start:
                top_end, top_id = open_ranges[-1]
                if top_end < position:
                    open_ranges.pop()  # wholly covered by the ranges inside it
                    continue
                piece_end = min(top_end, start - 1)
                emit(position, piece_end, top_id)
                position = piece_end + 1
                if top_end == piece_end:
                    open_ranges.pop()
            position = start
            open_ranges.append((end, value_id))
        self._starts, self._ends, self._value_ids = starts, ends, ids

    def find(self, number: int) -> Any | None:
        i = bisect.bisect_right(self._starts, number) - 1
        if i >= 0 and number <= self._ends[i]:
            return self._values[self._value_ids[i]]
        return None


def _parse_bound(text: str, version_hint: int | None) -> tuple[int, int] | None:
    """One end of a CSV range: an address, or an integer in the ``-num`` files."""
    text = text.strip()
    if text.isdigit():
        # A bare integer does not say its family: the file name does (``-ipv6-num.csv``), else its size.
        number = int(text)
        version = version_hint or (4 if number <= _V4_MAX else 6)
        return (version, number) if number <= (_V4_MAX if version == 4 else _V6_MAX) else None
    try:
        # Strict parsing (no v4-mapped folding here: a range's family is the one its file wrote).
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def _asn_value(row: list[str]) -> tuple[int, str | None] | None:
    text = row[2].strip().upper().removeprefix("AS")
    if not text.isdigit():
        return None
    asn = int(text)
    if asn == 0 or asn > 0xFFFFFFFF:
        return None  # AS0 marks unrouted space (RFC 7607): no answer rather than a wrong one
    # An organisation name with an unquoted comma splits into more columns: rejoin them.
    name = ",".join(row[3:]).strip() or None
    return asn, name


def _cc_value(row: list[str]) -> str | None:
    cc = row[2].strip().upper()
    if (
        len(cc) != 2 or not cc.isascii() or not cc.isalpha() or cc == WITHHELD_CC
    ):  # "unknown" in the databases, as OONI withholds it
        return None
    return cc


class _CsvSource:
    """One ip-location-db CSV file: an IPv4 and an IPv6 range table."""

    def __init__(self, path: Path, role: Role) -> None:
        self.path = path
        self.role = role
        self.tables = {4: _RangeTable(4), 6: _RangeTable(6)}
        self.skipped = 0

    def load(self, lines: Iterable[str]) -> None:
        name = self.path.name.lower()
        hint = 6 if "ipv6" in name else 4 if "ipv4" in name else None
        parse_value = _asn_value if self.role == "asn" else _cc_value
        for line_no, row in enumerate(csv.reader(lines)):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            low = _parse_bound(row[0], hint) if len(row) >= 3 else None
            high = _parse_bound(row[1], hint) if low is not None else None
            value = parse_value(row) if high is not None else None
            if low is None or high is None or value is None or low[0] != high[0] or low[1] > high[1]:
                if line_no > 0:  # the first line may be a header
                    self.skipped += 1
                continue
            self.tables[low[0]].add(low[1], high[1], value)
        for table in self.tables.values():
            table.finish()
        if not any(len(table) for table in self.tables.values()):
            raise GeoDBError(f"{self.path}: no usable {self.role} rows (is this an ip-location-db CSV?)")

    @property
    def overlaps(self) -> int:
        return sum(table.overlaps for table in self.tables.values())

    def __len__(self) -> int:
        return sum(len(table) for table in self.tables.values())

    def find_asn(self, version: int, number: int) -> tuple[int, str | None] | None:
        return self.tables[version].find(number) if self.role == "asn" else None

    def find_cc(self, version: int, number: int) -> str | None:
        return self.tables[version].find(number) if self.role == "country" else None


def _mmdb_asn(record: dict[str, Any]) -> tuple[int, str | None] | None:
    raw = record.get("autonomous_system_number")
    if isinstance(raw, str) and raw.upper().removeprefix("AS").isdigit():
        raw = int(raw.upper().removeprefix("AS"))
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 < raw <= 0xFFFFFFFF:
        return None
    name = record.get("autonomous_system_organization")
    return raw, name if isinstance(name, str) and name else None


def _mmdb_cc(record: dict[str, Any]) -> str | None:
    # ip-location-db writes a flat ``country_code``; GeoLite2 and DB-IP a ``country`` map, and GeoLite2
    # falls back on the ``registered_country`` for ranges it could not place.
    cc: Any = record.get("country_code")
    for key in ("country", "registered_country"):
        if not isinstance(cc, str) and isinstance(record.get(key), dict):
            cc = record[key].get("iso_code")
    if isinstance(cc, str) and len(cc) == 2 and cc.isascii() and cc.isalpha() and cc.upper() != WITHHELD_CC:
        return cc.upper()
    return None


class _MmdbSource:
    """One MaxMind DB file (GeoLite2-ASN/-Country, DB-IP lite, ip-location-db's MMDB builds)."""

    def __init__(self, path: Path, role: Role, reader: maxminddb.Reader) -> None:
        self.path = path
        self.role = role
        self.reader = reader
        self.ip_version = reader.metadata().ip_version

    def _record(self, version: int, number: int) -> dict[str, Any] | None:
        if version == 6 and self.ip_version == 4:
            return None
        address = ipaddress.IPv4Address(number) if version == 4 else ipaddress.IPv6Address(number)
        try:
            record = self.reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None  # a corrupt region of the file is a miss, not a 500 for the caller
        return record if isinstance(record, dict) else None

    def find_asn(self, version: int, number: int) -> tuple[int, str | None] | None:
        record = self._record(version, number)
        return _mmdb_asn(record) if record is not None else None

    def find_cc(self, version: int, number: int) -> str | None:
        record = self._record(version, number)
        return _mmdb_cc(record) if record is not None else None

    def close(self) -> None:
        self.reader.close()


def _is_mmdb(path: Path, head: bytes) -> bool:
    name = path.name.lower()
    if name.endswith((".mmdb", ".mmdb.gz")):
        return True
    if head.startswith(_GZIP_MAGIC):
        return False  # a compressed MMDB must say so in its name; content sniffing would inflate it all
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - _MMDB_TAIL))
        return _MMDB_MARKER in handle.read()


def _open_source(path: Path, role: Role) -> _CsvSource | _MmdbSource:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
        if _is_mmdb(path, head):
            if head.startswith(_GZIP_MAGIC):
                with gzip.open(path, "rb") as packed:
                    reader = maxminddb.open_database(io.BytesIO(packed.read()), maxminddb.MODE_FD)
            else:
                reader = maxminddb.open_database(os.fspath(path))
            return _MmdbSource(path, role, reader)
        source = _CsvSource(path, role)
        raw: io.BufferedIOBase = gzip.open(path, "rb") if head.startswith(_GZIP_MAGIC) else path.open("rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text:
            source.load(text)
        return source
    except (OSError, EOFError, ValueError, csv.Error, maxminddb.InvalidDatabaseError) as exc:
        raise GeoDBError(f"{path}: cannot read as a {role} database: {exc}") from exc


class GeoDB:
    """Lookups in the operator's ASN and country databases.

    When several files of one role are given, the first that knows an address answers (the
    ip-location-db merge rule: front database above back one), so a v4 and a v6 file, or a curated
    file before a general one, can be combined.
    """

    def __init__(
        self,
        asn_sources: Sequence[_CsvSource | _MmdbSource] = (),
        country_sources: Sequence[_CsvSource | _MmdbSource] = (),
    ) -> None:
        self._asn_sources = tuple(asn_sources)
        self._country_sources = tuple(country_sources)

    @classmethod
    def load(cls, asn_files: Sequence[Path] = (), country_files: Sequence[Path] = ()) -> GeoDB:
        """Read every file (raises :class:`GeoDBError` naming the file if one is unusable)."""
        asn_sources: list[_CsvSource | _MmdbSource] = []
        country_sources: list[_CsvSource | _MmdbSource] = []
        try:
            for path in asn_files:
                asn_sources.append(_open_source(path, "asn"))
            for path in country_files:
                country_sources.append(_open_source(path, "country"))
        except GeoDBError:
            cls(asn_sources, country_sources).close()  # don't leak the MMDB maps already opened
            raise
        return cls(asn_sources, country_sources)

    def lookup(self, ip: str) -> GeoInfo:
        """ASN, country and network name of ``ip``; ``GeoInfo(None, None, None)`` when unknown or when
        ``ip`` is not an address. Never raises."""
        parsed = _parse_ip(ip)
        if parsed is None:
            return _UNKNOWN
        version, number = parsed
        asn: tuple[int, str | None] | None = None
        for source in self._asn_sources:
            asn = source.find_asn(version, number)
            if asn is not None:
                break
        cc: str | None = None
        for source in self._country_sources:
            cc = source.find_cc(version, number)
            if cc is not None:
                break
        if asn is None:
            return _UNKNOWN if cc is None else GeoInfo(cc=cc)
        return GeoInfo(asn=asn[0], cc=cc, network_name=asn[1])

    def describe(self) -> list[str]:
        """One line per file for the startup log (file names and sizes; no addresses)."""
        lines = []
        for source in (*self._asn_sources, *self._country_sources):
            if isinstance(source, _CsvSource):
                detail = f"{len(source)} ranges, {source.skipped} rows skipped, {source.overlaps} overlaps"
            else:
                detail = f"mmdb {source.reader.metadata().database_type}"
            lines.append(f"{source.role}: {source.path.name}: {detail}")
        return lines

    def close(self) -> None:
        """Release MMDB files (CSV tables are plain memory)."""
        for source in (*self._asn_sources, *self._country_sources):
            if isinstance(source, _MmdbSource):
                source.close()

    def __enter__(self) -> GeoDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

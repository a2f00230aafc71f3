"""The CSV summary (and Parquet's staging) written by PostgreSQL: ``COPY (SELECT line ...) TO STDOUT``.

The row path reads every row into a :class:`StoredMeasurement` and writes it with ``csv.writer``
(:func:`.exports.csv_line`). Here one SELECT builds each row's CSV line, fields quoted as ``csv.writer``
quotes them (QUOTE_MINIMAL: a field holding a comma, a quote, CR or LF is quoted with inner quotes doubled;
NULL and "" are both an empty field), the blobs base64 by ``encode`` (its line breaks removed), and
``COPY ... TO STDOUT`` streams the lines in its text format, which Python undoes with two byte-string
passes: each line ends with LF (made CR LF, as ``csv.writer`` ends records), and backslash escapes only
where a line holds a backslash or a control character. No Python object is built per row.

Keyset pages, as :mod:`.export_rows` reads SQLite: each page is one index look-up for its last key
(``OFFSET page - 1``) and one COPY of the keys up to it, so no statement stays open while a client is slow.

The output is byte for byte the row path's (tests/collector/test_export_postgres.py) where
:func:`summary_copy_applies`: every start and receive time in years 1000-9999 (``to_char`` and Python
format other years differently) and every flag ASCII (PostgreSQL's JSON keeps other characters as they
are, Python's ``json.dumps`` escapes them). Otherwise the caller takes the row path.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from gatewatch.core.measurement import as_utc
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .export_lines import DOCUMENT_COLUMNS
from .export_rows import Page
from .store.base import MeasurementFilter, filter_sql
from .store.postgres import PostgresStore

__all__ = [
    "COPY_PAGE_ROWS",
    "DOCUMENT_PAGE_ROWS",
    "copy_summary_page",
    "document_page",
    "documents_apply",
    "from_copy_text",
    "summary_copy_applies",
]

COPY_PAGE_ROWS: Final = 20_000  # rows per COPY (~20 MB of CSV held at once; 5,000 a page: 20% slower)
DOCUMENT_PAGE_ROWS: Final = 2000  # rows per page of columns for JSON Lines and OONI (a few MB)


def _quoted(expression: str) -> str:
    """SQL for the CSV field of a text value as Python's csv module writes it; NULL as an empty field."""
    return (
        f"CASE WHEN strpos({expression}, ',') > 0 OR strpos({expression}, '\"') > 0"
        f" OR strpos({expression}, chr(13)) > 0 OR strpos({expression}, chr(10)) > 0"
        f" THEN '\"' || replace({expression}, '\"', '\"\"') || '\"' ELSE coalesce({expression}, '') END"
    )


def _b64(column: str) -> str:
    return f"coalesce(replace(encode({column}, 'base64'), chr(10), ''), '')"


_SECOND = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''
_HOUR = '\'YYYY-MM-DD"T"HH24":00:00Z"\''
_TOKEN_SIGNED = f"signature_scheme = '{SCHEME_BLIND_TOKEN}'"
# One text per row, in CSV_COLUMNS' order (exports.py), without its line end.
_LINE = " || ',' || ".join(
    [
        _quoted("measurement_uid"),
        f"to_char(measurement_start_time AT TIME ZONE 'UTC', {_SECOND})",
        *(
            _quoted(column)
            for column in ("probe_cc", "probe_asn", "test_name", "input", "domain", "blocking")
        ),
        "CASE WHEN anomaly THEN 'true' ELSE 'false' END",
        _quoted("technique"),
        _quoted("fingerprint_key"),
        f"to_char(received_at AT TIME ZONE 'UTC', {_HOUR})",
        _quoted("array_to_json(flags)::text"),
        _quoted("signature_scheme"),
        f"CASE WHEN {_TOKEN_SIGNED} THEN "
        + " || ',' || ".join(
            [
                _b64("payload"),
                _b64("signature"),
                _b64("ephemeral_key"),
                _b64("token"),
                "coalesce(token_epoch::text, '')",
                _quoted("token_key_id"),
            ]
        )
        + " ELSE ',,,,,' END",
    ]
)
_DAY = "to_char(measurement_start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
_ORDER = " ORDER BY measurement_start_time, measurement_uid"
_LOWEST, _HIGHEST = 1000, 9999
# COPY's text format escapes a backslash, and BS, FF, LF, CR, TAB and VT, with a backslash.
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_UNESCAPED = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def from_copy_text(data: bytes) -> bytes:
    """Whole lines of COPY's text format (one column, never NULL) as CSV records (CR LF line ends)."""
    data = data.replace(b"\n", b"\r\n")  # a LF inside a value is escaped: every raw LF ends a line
    if b"\\" in data:
        data = _ESCAPE.sub(lambda match: _UNESCAPED[match.group(1)], data)
    return data


async def summary_copy_applies(store: PostgresStore, f: MeasurementFilter) -> bool:
    """Whether COPY writes the selection's summary exactly as the row path does (one scan of it)."""
    years, odd_flags = await _formats_as_python(store, f)
    return years and not odd_flags


async def documents_apply(store: PostgresStore, f: MeasurementFilter) -> bool:
    """Whether :func:`document_page` formats the selection's times as Python does (one scan of it; the
    flags are decoded by Python there)."""
    years, _ = await _formats_as_python(store, f)
    return years


async def _formats_as_python(store: PostgresStore, f: MeasurementFilter) -> tuple[bool, bool]:
    """(every start and receive time in years 1000-9999, some flag not printable ASCII) in the selection."""
    where, params = filter_sql(f, lambda n: f"${n}", as_utc)
    (low, high, received_low, received_high, odd_flags), *_ = await store.export_fetch(
        "SELECT min(measurement_start_time), max(measurement_start_time), min(received_at),"
        " max(received_at), coalesce(bool_or(array_to_string(flags, '') ~ '[^\\x01-\\x7e]'), false)"
        f" FROM measurements{where}",
        *params,
    )
    if low is None:
        return True, False
    years = (_year(low), _year(high), _year(received_low), _year(received_high))
    return all(_LOWEST <= year <= _HIGHEST for year in years), bool(odd_flags)


def _year(value: datetime) -> int:
    return as_utc(value).year


def _unescaped(data: bytes) -> bytes:
    return _ESCAPE.sub(lambda match: _UNESCAPED[match.group(1)], data) if b"\\" in data else data


def _partitioned_page(data: bytes) -> Page:
    """Lines of COPY's text format ``day TAB country TAB line`` (a TAB in a value is escaped, so the first
    two raw TABs split the fields) as a partitioned :class:`Page` of CSV records."""
    lines: list[bytes] = []
    partitions: list[tuple[str, str]] = []
    for raw in data.split(b"\n")[:-1]:
        day, cc, line = raw.split(b"\t", 2)
        partitions.append((day.decode(), _unescaped(cc).decode()))
        lines.append(_unescaped(line) + b"\r\n")
    return Page(lines, partitions)


async def copy_summary_page(
    store: PostgresStore,
    f: MeasurementFilter,
    after: tuple[datetime, str] | None,
    page_rows: int = COPY_PAGE_ROWS,
    *,
    partitioned: bool = False,
) -> tuple[Page, tuple[datetime, str] | None]:
    """The CSV records of the next ``page_rows`` rows after ``after`` (in the store's order; with
    ``partitioned``, each row's UTC day and country too, as ``export_stream.row_partition`` gives them),
    and where the next page starts (None after the last)."""
    where, params = filter_sql(f, lambda n: f"${n}", as_utc, after)
    last = await store.export_fetch(
        f"SELECT measurement_start_time, measurement_uid FROM measurements{where}{_ORDER}"
        f" OFFSET {int(page_rows) - 1} LIMIT 1",
        *params,
    )
    if last:
        bound = f"(measurement_start_time, measurement_uid) <= (${len(params) + 1}, ${len(params) + 2})"
        where = f"{where} AND {bound}" if where else f" WHERE {bound}"
        params = [*params, last[0][0], last[0][1]]
    pieces: list[bytes] = []

    async def output(piece: bytes) -> None:
        pieces.append(piece)

    columns = f"{_DAY}, probe_cc, {_LINE}" if partitioned else _LINE
    await store.export_copy(f"SELECT {columns} FROM measurements{where}{_ORDER}", params, output)
    data = b"".join(pieces)
    page = _partitioned_page(data) if partitioned else Page([from_copy_text(data)] if data else [])
    return page, ((last[0][0], last[0][1]) if last else None)


# export_lines.DOCUMENT_COLUMNS, as PostgreSQL writes them (times as Python formats them, for the years
# documents_apply admits).
_DOCUMENT_SQL = {
    "start": "to_char(measurement_start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
    "started": "to_char(measurement_start_time AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISS\"Z\"')",
    "received_at": f"to_char(received_at AT TIME ZONE 'UTC', {_HOUR})",
    "flags": "array_to_json(flags)::text",
}
_DOCUMENTS = ", ".join(_DOCUMENT_SQL.get(name, name) for name in DOCUMENT_COLUMNS)


async def document_page(
    store: PostgresStore,
    f: MeasurementFilter,
    after: tuple[datetime, str] | None,
    page_rows: int = DOCUMENT_PAGE_ROWS,
    *,
    partitioned: bool = False,
) -> tuple[list[tuple[Any, ...]], tuple[datetime, str] | None]:
    """The next ``page_rows`` rows after ``after`` (in the store's order) as :data:`DOCUMENT_COLUMNS`
    (export_lines.py), each followed by its UTC day and country with ``partitioned``, then its start time
    and uid; and where the next page starts (None after the last)."""
    where, params = filter_sql(f, lambda n: f"${n}", as_utc, after)
    extra = f"{_DAY}, probe_cc, " if partitioned else ""
    rows = await store.export_fetch(
        f"SELECT {_DOCUMENTS}, {extra}measurement_start_time, measurement_uid"
        f" FROM measurements{where}{_ORDER} LIMIT {int(page_rows) + 1}",
        *params,
    )
    if len(rows) > page_rows:
        return rows[:page_rows], (rows[page_rows - 1][-2], rows[page_rows - 1][-1])
    return rows, None

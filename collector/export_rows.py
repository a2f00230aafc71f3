"""The export's flattened summary (CSV, and Parquet through it) read as text straight from SQLite.

The summary of a row is what :func:`.exports.summary_values` makes of a :class:`StoredMeasurement`; for the
SQLite store one SELECT writes each row's CSV line itself (times formatted, ``anomaly`` as
``true``/``false``, ``flags`` a compact JSON array, every text field quoted as ``csv.writer`` quotes it), so
that no Python object is built per row and no Python loop looks at each character (``csv.writer`` spends
~10 ns a character, and a token-signed row carries its payload in base64). Only the token rows' blobs are
base64-encoded in Python (SQLite has no base64). tests/collector/test_export_rows.py checks byte for byte
that both ways give the same CSV.

SQLite's ``strftime`` agrees with Python's only for years 1970-9999 (Python does not zero-pad years
below 1000, and integer division rounds negative times the other way): :func:`summary_sql_applies` says
whether every stored start time is in that range. ``received_at`` is read as its hour, which Python
writes (:data:`RECEIVED_HOUR`): the same for any time, without a scan for its range.

Reading and writing are two steps (:class:`SqlPages`): the export reads a page on the store's reader
thread while its own thread writes the previous one into records.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, NamedTuple

from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN, SIGNATURE_SCHEMES

from .exports import received_hour_text
from .store.base import MeasurementFilter, filter_sql, from_micros, to_micros
from .store.sqlite import ROWS, TOKEN_COLUMNS

__all__ = [
    "PAGE_ROWS",
    "SUMMARY_SQL",
    "Page",
    "SqlPages",
    "keyset_pages",
    "page_bytes",
    "sql_pages",
    "summary_pages",
    "summary_sql_applies",
    "with_exact",
]

PAGE_ROWS: Final = 2000  # rows read per query: no read transaction stays open while a client is slow

_LOWEST, _HIGHEST = to_micros(datetime(1970, 1, 1, tzinfo=UTC)), to_micros(datetime(9999, 12, 31, tzinfo=UTC))


def _quoted(expression: str) -> str:
    """SQL for the CSV field of a text value, as Python's csv module writes it (QUOTE_MINIMAL): quoted,
    with inner quotes doubled, when it holds a comma, a quote, CR or LF; NULL as an empty field."""
    return (
        f"CASE WHEN instr({expression}, ',') OR instr({expression}, '\"')"
        f" OR instr({expression}, char(13)) OR instr({expression}, char(10))"
        f" THEN '\"' || replace({expression}, '\"', '\"\"') || '\"' ELSE coalesce({expression}, '') END"
    )


_TOKEN_SIGNED = f"signature_scheme = '{SCHEME_BLIND_TOKEN}'"
# The fields before and after ``received_at`` (RECEIVED_HOUR), in CSV_COLUMNS' order (exports.py), as
# text.
_BEFORE_RECEIVED = " || ',' || ".join(
    [
        _quoted("measurement_uid"),
        "strftime('%Y-%m-%dT%H:%M:%SZ', measurement_start_time / 1000000, 'unixepoch')",
        *(
            _quoted(column)
            for column in ("probe_cc", "probe_asn", "test_name", "input", "domain", "blocking")
        ),
        "CASE WHEN anomaly THEN 'true' ELSE 'false' END",
        _quoted("technique"),
        _quoted("fingerprint_key"),
    ]
)
_AFTER_RECEIVED = f"{_quoted('json(flags)')} || ',' || {_quoted('signature_scheme')}"
_CRLF = "char(13, 10)"
# The hour of ``received_at`` since the epoch, rounded down (SQLite's division rounds towards zero), which
# exports.received_hour_text writes: SQLite's strftime differs from Python's before 1970 and year 1000,
# and costs a tenth of a summary row's time.
RECEIVED_HOUR: Final = "(received_at - (received_at < 0) * 3599999999) / 3600000000"
_EPOCH, _KEY_ID = TOKEN_COLUMNS["token_epoch"], TOKEN_COLUMNS["token_key_id"]
_TAIL = f"coalesce(CAST({_EPOCH} AS TEXT), '') || ',' || {_quoted(_KEY_ID)} || {_CRLF}"
_BLOBS_AND_TAIL = (
    f"CASE WHEN {_TOKEN_SIGNED} THEN payload END, "
    f"CASE WHEN {_TOKEN_SIGNED} THEN signature END, "
    f"CASE WHEN {_TOKEN_SIGNED} THEN {TOKEN_COLUMNS['ephemeral_key']} END, "
    f"CASE WHEN {_TOKEN_SIGNED} THEN {TOKEN_COLUMNS['token']} END, "
    f"CASE WHEN {_TOKEN_SIGNED} THEN {_TAIL} END"
)
# Exact, for any stored text: the head around ``received_at``, then the four blobs (base64 in Python:
# SQLite has no base64) and the tail (epoch and issuer key id) of a token-signed row.
_QUOTED_ROW = f"{_BEFORE_RECEIVED}, {RECEIVED_HOUR}, {_AFTER_RECEIVED}, {_BLOBS_AND_TAIL}"
# Fast, for the usual row: the head's plain fields up to the fingerprint joined by a unit separator
# (U+001F), which Python turns into commas when no field needs quoting (no comma, quote, CR or LF, and no
# U+001F of its own); quoting every field in SQL costs four instr() calls a field. ``received_at`` comes
# as its hour (RECEIVED_HOUR), ``flags`` quoted here ("[]" as it is: what most rows hold; a non-empty
# JSON array of strings always holds quotes) and the scheme apart (one of the vocabulary's, or the row is
# not plain). Any other row is read again through _QUOTED_ROW.
_SEPARATOR = "\x1f"
_PLAIN_FIELDS = [
    "measurement_uid",
    "strftime('%Y-%m-%dT%H:%M:%SZ', measurement_start_time / 1000000, 'unixepoch')",
    "probe_cc",
    "probe_asn",
    "test_name",
    "input",
    "domain",
    "blocking",
    "CASE WHEN anomaly THEN 'true' ELSE 'false' END",
    "coalesce(technique, '')",
    "coalesce(fingerprint_key, '')",
]
_FLAGS = f"CASE WHEN flags = '[]' THEN '[]' ELSE {_quoted('json(flags)')} END"
_PLAIN_HEAD = " || char(31) || ".join(_PLAIN_FIELDS)
_PLAIN_ROW = f"{_PLAIN_HEAD}, {RECEIVED_HOUR}, {_FLAGS}, signature_scheme, {_BLOBS_AND_TAIL}"
_NEEDS_QUOTES = re.compile('[,"\r\n]')
_PLAIN_SEPARATORS: Final = len(_PLAIN_FIELDS) - 1
_PLAIN_SCHEMES: Final = frozenset(scheme for scheme in SIGNATURE_SCHEMES if not _NEEDS_QUOTES.search(scheme))


def summary_sql_applies(conn: sqlite3.Connection) -> bool:
    """Whether every stored start time formats the same in SQLite as in Python (two index lookups)."""
    low, high = conn.execute(
        "SELECT min(measurement_start_time), max(measurement_start_time) FROM measurements"
    ).fetchone()
    return low is None or (low >= _LOWEST and high < _HIGHEST)


RawPages = Iterator[tuple[list[Any], list[tuple[str, str]] | None]]  # keyset pages and their partitions


class Page(NamedTuple):
    """A page of an export's records in the store's order: text (the SQL paths) or bytes (rows encoded by
    :mod:`.exports`), and with ``partitioned`` each row's (UTC day ``YYYY-MM-DD``, country)."""

    lines: list[str] | list[bytes]
    partitions: list[tuple[str, str]] | None = None


_PARTITION = "strftime('%Y-%m-%d', measurement_start_time / 1000000, 'unixepoch'), probe_cc, "


def _page_table(conn: sqlite3.Connection, sql: str, values: Sequence[object]) -> str:
    """An empty temporary table shaped as ``sql``'s rows, made once per connection and shape, in memory
    (a page of token-signed rows is ~10 MB: not worth a temporary file; emptied after each page)."""
    conn.execute("PRAGMA temp_store = MEMORY")  # the same value again changes nothing
    name = "gatewatch_page_" + hashlib.sha256(sql.encode()).hexdigest()[:16]
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} AS SELECT * FROM ({sql}) LIMIT 0", values)
    conn.execute(f"DELETE FROM temp.{name}")  # what an export given up half-way left
    return name


def keyset_pages(
    conn: sqlite3.Connection,
    columns: str,
    column_params: Sequence[object],
    f: MeasurementFilter,
    page_rows: int,
    partitioned: bool,
) -> RawPages:
    """``SELECT columns`` over the selection a keyset page at a time, each row followed by its partition
    (with ``partitioned``: day, country), start time and uid; ``column_params`` are the columns' own.

    Each page is written into a temporary table by one statement, then read from it: sqlite3 lets the
    GIL go for each step of a query and takes it back for each row, so a query read row by row while
    another thread runs Python waits a switch interval (5 ms) for every row; written in one step, SQLite
    does the page's work at once without the GIL, and only the cheap reading of ready values needs it."""
    after: tuple[datetime, str] | None = None
    extra = (_PARTITION if partitioned else "") + "measurement_start_time, measurement_uid"
    table: str | None = None
    while True:
        where, params = filter_sql(f, lambda _n: "?", to_micros, after)
        sql = (
            f"SELECT {columns}, {extra} FROM {ROWS}{where} ORDER BY measurement_start_time, measurement_uid"
            " LIMIT ?"
        )
        values = (*column_params, *params, page_rows)
        if table is None:
            table = _page_table(conn, sql, values)
        conn.execute(f"INSERT INTO temp.{table} {sql}", values)
        rows = conn.execute(f"SELECT * FROM temp.{table} ORDER BY rowid").fetchall()
        conn.execute(f"DELETE FROM temp.{table}")
        if rows:
            yield rows, [(row[-4], row[-3]) for row in rows] if partitioned else None
        if len(rows) < page_rows:
            return
        after = (from_micros(rows[-1][-2]), rows[-1][-1])


Exact = Callable[[list[str]], dict[str, str]]  # records of the given uids, written the exact way


class SqlPages(NamedTuple):
    """An export's records from SQLite in two steps, so that the two can run at once on two threads:
    ``read`` gives keyset pages of rows (on the store's reader thread: sqlite3 lets the GIL go while SQLite
    writes each row's text), ``write`` turns a page into records (on the export's thread, while the next
    page is read) and asks ``exact`` (a reader-thread call, given the uids) for the rare row it cannot
    write from its text."""

    read: Callable[[sqlite3.Connection, MeasurementFilter, int, bool], RawPages]
    write: Callable[[list[Any], Exact], list[str]]
    exact: Callable[[sqlite3.Connection, list[str]], dict[str, str]]


def sql_pages(
    sql: SqlPages, conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int, partitioned: bool
) -> Iterator[Page]:
    """``sql``'s pages read and written on one thread (the connection's)."""
    exact = partial(sql.exact, conn)
    for rows, partitions in sql.read(conn, f, page_rows, partitioned):
        yield Page(sql.write(rows, exact), partitions)


def _summary_rows(
    conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int, partitioned: bool
) -> RawPages:
    return keyset_pages(conn, _PLAIN_ROW, (), f, page_rows, partitioned)


def with_exact(rows: list[Any], lines: list[str | None], exact: Exact) -> list[str]:
    """``lines`` of ``rows`` (each ending in its uid), the missing ones (None) asked of ``exact`` at once."""
    missing = [row[-1] for row, line in zip(rows, lines, strict=True) if line is None]
    if not missing:
        return lines  # type: ignore[return-value]
    written = exact(missing)
    return [written[row[-1]] if line is None else line for row, line in zip(rows, lines, strict=True)]


def _summary_lines(rows: list[Any], exact: Exact) -> list[str]:
    return with_exact(rows, [_plain_line(row) for row in rows], exact)


def _quoted_lines(conn: sqlite3.Connection, uids: list[str]) -> dict[str, str]:
    return {uid: _quoted_line(conn, uid) for uid in uids}


SUMMARY_SQL: Final = SqlPages(_summary_rows, _summary_lines, _quoted_lines)


def summary_pages(
    conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int = PAGE_ROWS, *, partitioned: bool = False
) -> Iterator[Page]:
    """The selection's CSV lines in the store's order (start time, uid), a keyset page at a time; with
    ``partitioned``, each row's (UTC day, country) too (:data:`SUMMARY_SQL` on one thread)."""
    return sql_pages(SUMMARY_SQL, conn, f, page_rows, partitioned)


def _b64(value: bytes | None) -> str:
    return binascii.b2a_base64(value, newline=False).decode() if value is not None else ""


def _signed_line(head: str, row: Sequence[Any]) -> str:
    if row[4] is None:  # not token-signed: the signed columns are empty
        return head + ",,,,,\r\n"
    return f"{head}{_b64(row[0])},{_b64(row[1])},{_b64(row[2])},{_b64(row[3])},{row[4]}"


def _plain_line(row: Sequence[Any]) -> str | None:
    plain, scheme = row[0], row[3]
    if scheme not in _PLAIN_SCHEMES or _NEEDS_QUOTES.search(plain):
        return None
    if plain.count(_SEPARATOR) != _PLAIN_SEPARATORS:
        return None
    head = f"{plain.replace(_SEPARATOR, ',')},{received_hour_text(row[1])},{row[2]},{scheme},"
    return _signed_line(head, row[4:9])


def _quoted_line(conn: sqlite3.Connection, uid: str) -> str:
    row = conn.execute(f"SELECT {_QUOTED_ROW} FROM {ROWS} WHERE measurement_uid = ?", (uid,)).fetchone()
    return _signed_line(f"{row[0]},{received_hour_text(row[1])},{row[2]},", row[3:8])


def page_bytes(lines: Sequence[str] | Sequence[bytes]) -> bytes:
    """Records of a :class:`Page` as bytes: the text of :func:`summary_pages` exactly as ``csv.writer``
    writes :func:`.exports.summary_values` (tests/collector/test_export_rows.py), or encoded records."""
    if lines and isinstance(lines[0], bytes):
        return b"".join(lines)  # type: ignore[arg-type]
    text = "".join(lines)  # type: ignore[arg-type]
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form: "?" as csv_line writes it
        return text.encode("utf-8", "replace")

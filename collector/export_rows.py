"""The export's flattened summary (CSV, and Parquet through it) read as text straight from SQLite.

The summary of a row is what :func:`.exports.summary_values` makes of a :class:`StoredMeasurement`; for the
SQLite store the same values come out of one SELECT (times formatted, ``anomaly`` as ``true``/``false``,
``flags`` as a compact JSON array, the signed columns only for token-signed rows), so that no Python
object is built per row and ``csv.writer.writerows`` encodes a whole page at once. Only the token rows'
blobs are base64-encoded in Python. tests/collector/test_export_rows.py checks byte for byte that both
ways give the same CSV.

SQLite's ``strftime`` agrees with Python's only for years 1970-9999 (Python does not zero-pad years
below 1000, and integer division rounds negative times the other way): :func:`summary_sql_applies` says
whether every stored start time is in that range (``received_at`` is the collector's own clock).
"""

from __future__ import annotations

import base64
import csv
import io
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .store.base import MeasurementFilter, filter_sql, from_micros, to_micros

__all__ = ["PAGE_ROWS", "csv_rows", "summary_pages", "summary_sql_applies"]

PAGE_ROWS: Final = 2000  # rows read per query: no read transaction stays open while a client is slow
_BLOBS = slice(14, 18)  # payload, signature, ephemeral key, token: raw bytes until written

_LOWEST, _HIGHEST = to_micros(datetime(1970, 1, 1, tzinfo=UTC)), to_micros(datetime(9999, 12, 31, tzinfo=UTC))


def _signed(column: str) -> str:
    return f"CASE WHEN signature_scheme = '{SCHEME_BLIND_TOKEN}' THEN {column} END"


# In CSV_COLUMNS' order (exports.py).
_SUMMARY = ", ".join(
    [
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
        "strftime('%Y-%m-%dT%H:00:00Z', received_at / 1000000, 'unixepoch')",
        "json(flags)",
        "signature_scheme",
        *(_signed(column) for column in ("payload", "signature", "ephemeral_key", "token")),
        *(_signed(column) for column in ("token_epoch", "token_key_id")),
    ]
)


def summary_sql_applies(conn: sqlite3.Connection) -> bool:
    """Whether every stored start time formats the same in SQLite as in Python (two index lookups)."""
    low, high = conn.execute(
        "SELECT min(measurement_start_time), max(measurement_start_time) FROM measurements"
    ).fetchone()
    return low is None or (low >= _LOWEST and high < _HIGHEST)


def summary_pages(
    conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int = PAGE_ROWS
) -> Iterator[list[tuple[Any, ...]]]:
    """The selection's summary rows in the store's order (start time, uid), a keyset page at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        where, params = filter_sql(f, lambda _n: "?", to_micros, after)
        sql = (
            f"SELECT {_SUMMARY} FROM measurements{where}"
            " ORDER BY measurement_start_time, measurement_uid LIMIT ?"
        )
        rows = conn.execute(sql, (*params, page_rows)).fetchall()
        if rows:
            yield rows
        if len(rows) < page_rows:
            return
        uid = rows[-1][0]
        (start,) = conn.execute(
            "SELECT measurement_start_time FROM measurements WHERE measurement_uid = ?", (uid,)
        ).fetchone()
        after = (from_micros(start), uid)


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def _encoded(row: Sequence[Any]) -> Sequence[Any]:
    if row[14] is None:  # not token-signed: the signed columns are empty
        return row
    return (*row[:14], *(_b64(blob) for blob in row[_BLOBS]), *row[18:])


def csv_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    """Summary rows (blobs still bytes, ``None`` for empty) as CSV records, ``\\r\\n``-terminated."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(map(_encoded, rows))
    return buffer.getvalue().encode("utf-8", "replace")  # "replace": lone surrogates have no UTF-8 form

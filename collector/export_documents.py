"""The JSON Lines export's records assembled by SQLite from the stored bytes (the SQLite store's fast path),
and the rows of columns the OONI export's records are written from (:func:`document_rows`, export_lines.py).

A record is the signed payload with its times in OONI's form, then ``analysis`` and ``signed``
(:func:`.exports.jsonl_line`). Decoding each payload with ``json.loads`` and encoding it again costs more
than everything else a row needs, so here SQLite's JSON functions (C) write the payload part: ``json_set``
replaces ``measurement_start_time`` (from the column, formatted as the CSV path does) and marks
``test_start_time``, whose OONI form Python writes (``_ooni_time_text``, cached), and the rest of the
payload is copied as stored, minus insignificant whitespace. ``analysis`` is written once per distinct
judgement (most rows share a few) and ``signed`` is base64 of the stored blobs.

The same value as the exact path, and the same bytes for every payload an agent writes (compact JSON as
pydantic writes it: tested); for a payload spelt otherwise (a ``\\u00e9`` escape, ``1E5``, spaces), the
spelling of the stored bytes is kept where ``json`` would re-spell it, the values are equal. A row whose
payload is not a JSON object with distinct keys the measurement format defines (those are dropped, as
:func:`.exports.ooni_document` drops them) is written the exact way (``stored_row`` + ``jsonl_line``).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, Final

from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .export_lines import DOCUMENT_COLUMNS, signed_text
from .export_rows import (
    PAGE_ROWS,
    RECEIVED_HOUR,
    Exact,
    Page,
    RawPages,
    SqlPages,
    keyset_pages,
    sql_pages,
    with_exact,
)
from .exports import _ooni_time_text, json_text, jsonl_line, judgement_fields, received_hour_text
from .store.base import MeasurementFilter
from .store.sqlite import TOKEN_COLUMNS, stored_row
from .store.verdict_codec import decode_verdict

__all__ = ["document_rows", "jsonl_pages", "jsonl_sql"]

_TOKEN_SIGNED = f"signature_scheme = '{SCHEME_BLIND_TOKEN}'"
_MARK = "\x1e"  # after the payload part when test_start_time is text: its stored value follows
_PAYLOAD = "CAST(payload AS TEXT)"
# Each known key removed once leaves "{}" only from an object of distinct known keys (a duplicate, an
# unknown key or anything but an object leaves more): anything else is NULL, the exact path. Each JSON
# function parses the text again, and json_each's aggregates cost three times as much as this.
_ONLY_KNOWN_KEYS = (
    f"json_remove({_PAYLOAD}, "
    + ", ".join("'$." + key.replace("'", "''") + "'" for key in Measurement.model_fields)
    + ") = '{}'"
)
_START = "strftime('%Y-%m-%d %H:%M:%S', measurement_start_time / 1000000, 'unixepoch')"
_PAYLOAD_PART = (
    f"CASE WHEN NOT json_valid({_PAYLOAD}) THEN NULL WHEN {_ONLY_KNOWN_KEYS} THEN"
    f" CASE json_type({_PAYLOAD}, '$.test_start_time') WHEN 'text' THEN"
    f" json_set({_PAYLOAD}, '$.measurement_start_time', {_START}, '$.test_start_time', ?) || char(30)"
    f" || json_extract({_PAYLOAD}, '$.test_start_time')"
    f" ELSE json_set({_PAYLOAD}, '$.measurement_start_time', {_START}) END END"
)
_COLUMNS = ", ".join(
    [
        _PAYLOAD_PART,
        "blocking",
        "anomaly",
        "technique",
        "fingerprint_key",
        "verdict_json",
        RECEIVED_HOUR,
        "flags",
        "signature_scheme",
        *(
            f"CASE WHEN {_TOKEN_SIGNED} THEN {column} END"
            for column in (
                "payload",
                "signature",
                TOKEN_COLUMNS["ephemeral_key"],
                TOKEN_COLUMNS["token"],
                TOKEN_COLUMNS["token_epoch"],
                TOKEN_COLUMNS["token_key_id"],
            )
        ),
    ]
)
_NO_FLAGS: Final = "[]"
_CACHED: Final = 4096


@lru_cache(maxsize=_CACHED)
def _analysis(
    blocking: str,
    anomaly: int,
    technique: str | None,
    fingerprint_key: str | None,
    verdict: bytes | str,
    received_hour: int,
    flags: str,
) -> str:
    listed = () if flags == _NO_FLAGS else json.loads(flags)
    received_at = received_hour_text(received_hour)
    return json_text(
        judgement_fields(
            blocking, bool(anomaly), technique, fingerprint_key, decode_verdict(verdict), received_at, listed
        )
    )


@lru_cache(maxsize=_CACHED)
def _test_start_time(stored: str) -> str:
    return json_text(_ooni_time_text(stored))


def _line(row: Sequence[Any], marker: str) -> str | None:
    part = row[0]
    if part is None:
        return None
    if _MARK in part:
        part, _, stored = part.partition(_MARK)
        part = part.replace(marker, _test_start_time(stored), 1)
    analysis = _analysis(row[1], row[2], row[3], row[4], row[5], row[6], row[7])
    return f'{part[:-1]},"analysis":{analysis},"signed":{signed_text(row[8:15])}}}\n'


def jsonl_sql() -> SqlPages:
    """The JSON Lines records of one export, read and written in two steps (``export_rows.SqlPages``); only
    where ``export_rows.summary_sql_applies`` (SQLite formats the start times as Python does)."""
    marker = "gatewatch-" + uuid.uuid4().hex  # where test_start_time goes: no payload can guess it
    quoted = json_text(marker)

    def read(conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int, partitioned: bool) -> RawPages:
        return keyset_pages(conn, _COLUMNS, (marker,), f, page_rows, partitioned)

    def write(rows: list[Any], exact: Exact) -> list[str]:
        return with_exact(rows, [_line(row, quoted) for row in rows], exact)

    return SqlPages(read, write, _exact_lines)


def _exact_lines(conn: sqlite3.Connection, uids: list[str]) -> dict[str, str]:
    return {uid: jsonl_line(stored_row(conn, uid)).decode() for uid in uids}


def jsonl_pages(
    conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int = PAGE_ROWS, *, partitioned: bool = False
) -> Iterator[Page]:
    """The selection's JSON Lines records (text, each ending in a newline) in the store's order, a keyset
    page at a time; with ``partitioned``, each row's (UTC day, country) too (:func:`jsonl_sql` on one
    thread)."""
    return sql_pages(jsonl_sql(), conn, f, page_rows, partitioned)


_SECOND_OF = "strftime('{}', measurement_start_time / 1000000, 'unixepoch')"
# export_lines.DOCUMENT_COLUMNS, as SQLite writes them (times as Python formats them, for the years
# summary_sql_applies admits).
_DOCUMENT_SQL = {
    "start": _SECOND_OF.format("%Y-%m-%d %H:%M:%S"),
    "started": _SECOND_OF.format("%Y%m%dT%H%M%SZ"),
    "received_at": RECEIVED_HOUR,
    **TOKEN_COLUMNS,
}
_DOCUMENT_COLUMNS = ", ".join(_DOCUMENT_SQL.get(name, name) for name in DOCUMENT_COLUMNS)


def document_rows(
    conn: sqlite3.Connection, f: MeasurementFilter, page_rows: int = PAGE_ROWS, *, partitioned: bool = False
) -> Iterator[tuple[list[Any], list[tuple[str, str]] | None]]:
    """The selection's rows as export_lines.DOCUMENT_COLUMNS (then, with ``partitioned``, day and country,
    then start time and uid) in the store's order, a keyset page at a time, and their partitions; only
    where ``export_rows.summary_sql_applies``."""
    return keyset_pages(conn, _DOCUMENT_COLUMNS, (), f, page_rows, partitioned)

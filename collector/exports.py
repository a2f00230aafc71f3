"""Research exports: a selection of stored measurements as JSON Lines, CSV or Parquet, streamed.

Each exporter is an async generator from an async iterable of :class:`StoredMeasurement` to byte chunks
of about ``chunk_size``; it holds one chunk and one row at a time, so memory does not grow with the
selection. Parquet cannot be streamed (its footer comes last): the selection is staged in a temporary
file, converted by duckdb under a memory limit, and the result streamed and deleted.

Nothing exported identifies a volunteer: the store has no address column, a long-term key's signature
and public key (the ``envelopes`` table) are never read here (a token-signed row exports only its batch's
ephemeral key), and a measurement document carries only the keys the measurement format
defines (an unexpected key in a stored payload is dropped rather than published). ``received_at`` leaves
the collector coarsened to the hour (:func:`public_received_at`), in every format and in the API: to the
second, it would let whoever watches a volunteer's line (a national gateway) pair "this subscriber
connected to the collector at 10:42:17" with "this batch arrived at 10:42:17". The store keeps the exact
time for operators.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import duckdb

from gatewatch.core.measurement import Measurement, format_utc, ooni_time
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN, blocking_value
from gatewatch.core.wire import MeasurementRow

from .ooni_format import ooni_measurement
from .store.base import StoredMeasurement

__all__ = [
    "COLUMN_TYPES",
    "CSV_COLUMNS",
    "EXPORT_FORMATS",
    "MEDIA_TYPES",
    "convert_all_to_parquet",
    "convert_to_parquet",
    "csv_header",
    "csv_line",
    "export",
    "export_csv",
    "export_jsonl",
    "export_ooni",
    "export_parquet",
    "json_text",
    "jsonl_line",
    "ooni_line",
    "judgement",
    "judgement_fields",
    "measurement_row",
    "ooni_document",
    "public_received_at",
    "signed_fields",
    "summary_values",
    "duckdb_config",
]

CHUNK_SIZE = 64 * 1024
RECEIVED_AT_PRECISION: Final = "hour"  # what the API's and the exports' received_at are truncated to
EXPORT_FORMATS = ("jsonl", "csv", "parquet", "ooni")
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "ooni": "application/x-ndjson",  # OONI's own JSON Lines (ooni_format.py)
}
# The flattened summary: the CSV's columns, and the Parquet file's with these types.
_COLUMN_TYPES = {
    "measurement_uid": "VARCHAR",
    "measurement_start_time": "TIMESTAMPTZ",
    "probe_cc": "VARCHAR",
    "probe_asn": "VARCHAR",
    "test_name": "VARCHAR",
    "input": "VARCHAR",
    "domain": "VARCHAR",
    "blocking": "VARCHAR",  # the stored text form: "false", "dns", ..., "null"
    "anomaly": "BOOLEAN",
    "technique": "VARCHAR",
    "fingerprint_key": "VARCHAR",
    "received_at": "TIMESTAMPTZ",
    # e.g. "asn_mismatch": kept-but-flagged submissions must be tellable apart (CSV: a JSON array text)
    "flags": "VARCHAR[]",
    # How it is signed (issue 12), so that anyone can re-verify it offline with the published issuer keys
    # (``gatewatch-collector verify``): the scheme, and for "blind-token/1" the exact signed bytes, the
    # batch's ephemeral key's signature over them, that key, and the token of its epoch and issuer key (all
    # base64). Rows signed by a long-term key (stored before, or identified probes) carry the scheme only.
    "signature_scheme": "VARCHAR",
    "payload": "VARCHAR",
    "signature": "VARCHAR",
    "ephemeral_public_key": "VARCHAR",
    "token": "VARCHAR",
    "token_epoch": "BIGINT",
    "token_key_id": "VARCHAR",
}
CSV_COLUMNS = tuple(_COLUMN_TYPES)
# Each CSV column's DuckDB type, for readers that should not guess (a CSV whose rows all say blocking
# "false" would read as BOOLEAN): read_csv(..., types=COLUMN_TYPES). Published in the export manifest.
COLUMN_TYPES: Final[dict[str, str]] = dict(_COLUMN_TYPES)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Only what the measurement format defines is published (an allowlist, not a denylist of known leaks).
_MEASUREMENT_KEYS = frozenset(Measurement.model_fields)


def public_received_at(received_at: datetime) -> str:
    """``received_at`` as it may leave the collector: truncated to the hour (``2026-11-23T10:00:00Z``)."""
    return format_utc(received_at.replace(minute=0, second=0, microsecond=0))


@lru_cache(maxsize=1024)
def received_hour_text(hour: int) -> str:
    """:func:`public_received_at` of a time in the ``hour``-th hour since the epoch (negative before 1970):
    the SQLite export paths read that hour (``export_rows.RECEIVED_HOUR``) and write its text once."""
    return public_received_at(_EPOCH + timedelta(hours=hour))


def judgement(row: StoredMeasurement) -> dict[str, Any]:
    """What the server concluded about a stored row, as JSON values: the last fields of the API's rows and
    the JSON Lines export's ``analysis``. ``blocking`` is OONI's JSON value again (false and null are not
    strings there). Not validated: an export publishes what is stored, whatever it is."""
    return judgement_fields(
        row.blocking,
        row.anomaly,
        row.technique,
        row.fingerprint_key,
        row.verdict_json,
        public_received_at(row.received_at),
        row.flags,
    )


def judgement_fields(
    blocking: str,
    anomaly: bool,
    technique: str | None,
    fingerprint_key: str | None,
    verdict_json: str,
    received_at: str,
    flags: Iterable[str],
) -> dict[str, Any]:
    """:func:`judgement` from the stored values (``received_at`` already public), for the exports that
    read columns rather than :class:`StoredMeasurement` rows (export_documents.py)."""
    return {
        "blocking": _blocking_json(blocking),
        "anomaly": anomaly,
        "technique": technique,
        "fingerprint_key": fingerprint_key,
        "verdict": json.loads(verdict_json),
        "received_at": received_at,
        "flags": list(flags),
    }


def _blocking_json(label: str) -> Any:
    try:
        return blocking_value(label)
    except ValueError:  # a value another version of the collector stored: published as it is
        return label


def measurement_row(row: StoredMeasurement) -> dict[str, Any]:
    """A stored row as the API lists it (:class:`MeasurementRow`'s fields, in its order): where and what was
    measured, and what the server concluded. Served as stored, not re-validated, so that a row written by
    another version of the collector cannot fail the page it is on (tests/collector/test_research.py checks
    that what this collector stores fits the model)."""
    fields = {
        "measurement_uid": row.measurement_uid,
        "measurement_start_time": format_utc(row.measurement_start_time),
        "probe_cc": row.probe_cc,
        "probe_asn": row.probe_asn,
        "test_name": row.test_name,
        "input": row.input,
        "domain": row.domain,
        **judgement(row),
    }
    return {name: fields[name] for name in MeasurementRow.model_fields}


def _ooni_time_text(value: Any) -> Any:
    """``2026-11-23T13:40:00Z`` → ``2026-11-23 13:40:00``; anything unparseable is left as it was."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value)
        return ooni_time(parsed) if parsed.tzinfo is not None else value
    except ValueError:  # also a time whose UTC form leaves the calendar (TimeOutOfRange)
        return value


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def signed_fields(row: StoredMeasurement) -> dict[str, Any]:
    """How the row is signed, for offline verification (see ``_COLUMN_TYPES``). The long-term key of
    rows signed before issue 12 (or by identified probes) is never exported: they carry the scheme only."""
    if row.signature_scheme != SCHEME_BLIND_TOKEN:
        return {"signature_scheme": row.signature_scheme}
    return {
        "signature_scheme": row.signature_scheme,
        "payload": _b64(row.payload),
        "signature": _b64(row.signature),
        "ephemeral_public_key": _b64(row.ephemeral_key),
        "token": _b64(row.token),
        "token_epoch": row.token_epoch,
        "token_key_id": row.token_key_id,
    }


def ooni_document(row: StoredMeasurement) -> dict[str, Any]:
    """One measurement as OONI publishes it, with the server's verdict under ``analysis`` and how it is
    signed under ``signed``."""
    payload = json.loads(row.payload)
    doc = {key: value for key, value in payload.items() if key in _MEASUREMENT_KEYS}
    doc["measurement_start_time"] = ooni_time(row.measurement_start_time)
    if "test_start_time" in doc:
        doc["test_start_time"] = _ooni_time_text(doc["test_start_time"])
    doc["analysis"] = judgement(row)
    doc["signed"] = signed_fields(row)
    return doc


# Built once: json.dumps with options builds a new encoder on every call (a few µs a row).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_JSON_ASCII = json.JSONEncoder(separators=(",", ":"))


def _json_line(obj: Any) -> bytes:
    try:
        return (_JSON.encode(obj) + "\n").encode()
    except UnicodeEncodeError:
        # A lone surrogate (a JSON "\\ud800" escape in a payload) has no UTF-8 form: escape it instead.
        return (_JSON_ASCII.encode(obj) + "\n").encode()


def json_text(obj: Any) -> str:
    """``obj`` as the JSON Lines exports write it (compact, UTF-8 unescaped), always encodable: with a lone
    surrogate it is ASCII-escaped, the same value."""
    text = _JSON.encode(obj)
    try:
        text.encode()
    except UnicodeEncodeError:
        return _JSON_ASCII.encode(obj)
    return text


def jsonl_line(row: StoredMeasurement) -> bytes:
    """The JSON Lines record of one row (newlines inside strings are escaped by JSON)."""
    return _json_line(ooni_document(row))


def ooni_line(row: StoredMeasurement) -> bytes:
    """One OONI Web Connectivity measurement (:mod:`.ooni_format`) as a JSON Lines record."""
    return _json_line(ooni_measurement(row, judgement(row)))


def summary_values(row: StoredMeasurement) -> tuple[Any, ...]:
    """The row's flattened summary in ``CSV_COLUMNS``' order, as :mod:`.export_rows` reads it from SQLite:
    ``anomaly`` ``true``/``false``, an absent technique or fingerprint ``""``, ``flags`` a JSON array text
    (never empty, so no reader guesses a number; DuckDB casts it to VARCHAR[] as it is), and the signed
    columns (blobs still bytes) only for token-signed rows."""
    token_signed = row.signature_scheme == SCHEME_BLIND_TOKEN
    return (
        row.measurement_uid,
        format_utc(row.measurement_start_time),
        row.probe_cc,
        row.probe_asn,
        row.test_name,
        row.input,
        row.domain,
        row.blocking,
        "true" if row.anomaly else "false",
        row.technique or "",
        row.fingerprint_key or "",
        public_received_at(row.received_at),
        json.dumps(list(row.flags), separators=(",", ":")),
        row.signature_scheme,
        *(
            (row.payload, row.signature, row.ephemeral_key, row.token, row.token_epoch, row.token_key_id)
            if token_signed
            else (None,) * 6
        ),
    )


def csv_header() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(CSV_COLUMNS)
    return buffer.getvalue().encode()


def _b64_or_none(value: Any) -> Any:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def csv_line(row: StoredMeasurement) -> bytes:
    """One CSV record (``\\r\\n``-terminated, quoted by the csv module where needed; None empty)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(map(_b64_or_none, summary_values(row)))
    return buffer.getvalue().encode("utf-8", "replace")  # "replace": lone surrogates have no UTF-8 form


async def _chunked(
    rows: AsyncIterable[StoredMeasurement],
    encode: Callable[[StoredMeasurement], bytes],
    first: bytes,
    size: int,
) -> AsyncIterator[bytes]:
    buffer = bytearray(first)
    async for row in rows:
        buffer += encode(row)
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def export_jsonl(
    rows: AsyncIterable[StoredMeasurement], *, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """One OONI-compatible measurement per line (empty output for an empty selection)."""
    return _chunked(rows, jsonl_line, b"", chunk_size)


def export_csv(
    rows: AsyncIterable[StoredMeasurement], *, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The flattened summary, header first (just the header for an empty selection)."""
    return _chunked(rows, csv_line, csv_header(), chunk_size)


def export_ooni(
    rows: AsyncIterable[StoredMeasurement], *, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """One OONI Web Connectivity measurement per line, as OONI's tools read them (``ooni_format.py``)."""
    return _chunked(rows, ooni_line, b"", chunk_size)


# duckdb holds about one row group in memory while writing: with its default (122,880 rows) bench/export.py
# peaks near 220 MiB RSS, with 50,000 near 150 MiB whatever the row count; still a fair size for readers.
_ROW_GROUP_ROWS = 50_000


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# Columns the store never leaves empty: an empty CSV field there is an empty string, not NULL. (The CSV
# writes an absent technique or fingerprint as "": in Parquet they are NULL, as an empty one would be.)
_NOT_NULL = ("measurement_uid", "probe_cc", "probe_asn", "test_name", "input", "domain", "blocking")


def duckdb_config(memory_limit: str = "256MB", threads: int = 1, temp_directory: str = "") -> dict[str, str]:
    """DuckDB's settings for an export: bounded memory and threads, and never an extension fetched or
    loaded on its own (the collector may have no network; the CSV and Parquet readers are built in)."""
    config = {
        "memory_limit": memory_limit,
        "threads": str(threads),
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }
    if temp_directory:
        config["temp_directory"] = temp_directory
    return config


def convert_to_parquet(staging: Path, target: Path, memory_limit: str = "256MB", threads: int = 1) -> None:
    """A staging file of CSV records (:func:`csv_header` first) to a Parquet file with the summary's types."""
    convert_all_to_parquet([(staging, target)], memory_limit, threads)


def convert_all_to_parquet(
    pairs: Iterable[tuple[Path, Path]], memory_limit: str = "256MB", threads: int = 1
) -> None:
    """:func:`convert_to_parquet` of each (staging, target) in one DuckDB connection (a partitioned export
    has hundreds of small files: opening DuckDB for each cost more than converting it)."""
    columns = "{" + ", ".join(f"{_sql_text(k)}: {_sql_text(v)}" for k, v in _COLUMN_TYPES.items()) + "}"
    con: duckdb.DuckDBPyConnection | None = None
    try:
        for staging, target in pairs:
            if con is None:
                con = duckdb.connect(
                    ":memory:", config=duckdb_config(memory_limit, threads, str(staging.parent))
                )
            con.execute(
                f"COPY (SELECT * FROM read_csv({_sql_text(str(staging))}, header = true, auto_detect = false,"
                f" hive_partitioning = false, quote = '\"', escape = '\"', columns = {columns},"
                f" force_not_null = [{', '.join(map(_sql_text, _NOT_NULL))}]))"
                f" TO {_sql_text(str(target))}"
                f" (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {_ROW_GROUP_ROWS})"
            )
    finally:
        if con is not None:
            con.close()


async def export_parquet(
    rows: AsyncIterable[StoredMeasurement],
    *,
    chunk_size: int = CHUNK_SIZE,
    memory_limit: str = "256MB",
    threads: int = 1,
    tmp_dir: Path | None = None,
) -> AsyncIterator[bytes]:
    """The summary as a Parquet file (timestamps ``TIMESTAMP WITH TIME ZONE``, ``anomaly`` BOOLEAN,
    ``flags`` a list), in row order. Disk use is about the size of the selection's summary, twice.

    One duckdb thread by default: an export should not take the cores the collector serves with.
    """
    workdir = Path(tempfile.mkdtemp(prefix="gatewatch-export-", dir=tmp_dir))
    try:
        staging, target = workdir / "rows.jsonl", workdir / "measurements.parquet"
        with staging.open("wb") as out:
            async for chunk in _chunked(rows, csv_line, csv_header(), chunk_size):
                out.write(chunk)
        await asyncio.to_thread(convert_to_parquet, staging, target, memory_limit, threads)
        staging.unlink()
        with target.open("rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk
    finally:
        # Also when the client goes away mid-download (the generator is closed).
        shutil.rmtree(workdir, ignore_errors=True)


def export(
    fmt: str, rows: AsyncIterable[StoredMeasurement], *, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The exporter for ``fmt`` (one of :data:`EXPORT_FORMATS`; ValueError otherwise)."""
    if fmt == "jsonl":
        return export_jsonl(rows, chunk_size=chunk_size)
    if fmt == "csv":
        return export_csv(rows, chunk_size=chunk_size)
    if fmt == "parquet":
        return export_parquet(rows, chunk_size=chunk_size)
    if fmt == "ooni":
        return export_ooni(rows, chunk_size=chunk_size)
    raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(EXPORT_FORMATS)})")

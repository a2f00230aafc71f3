"""Daily partitioned export files for ``gatewatch-collector export``, in every format the API serves.

Layout (hive-style, so that DuckDB, Spark, pyarrow and pandas read a whole tree in one call and get ``date``
and ``cc`` as columns)::

    OUT/date=YYYY-MM-DD/cc=XX/measurements.jsonl.gz        --format jsonl   (the default)
    OUT/date=YYYY-MM-DD/cc=XX/measurements.csv.gz          --format csv
    OUT/date=YYYY-MM-DD/cc=XX/measurements.ooni.jsonl.gz   --format ooni
    OUT/date=YYYY-MM-DD/cc=XX/measurements.parquet         --format parquet
    OUT/_manifest.json                                      every file: format, rows, bytes, sha256

The day is the measurement's start time in UTC. Records arrive a page at a time in the store's order (by
start time; :func:`export_selection` reads them as the API export does, SQL-written on SQLite, on a worker
thread while this one compresses), each page's records written once per file, so the files being written
are mostly one day's; at most ``max_open`` are open at once and the least recently used
is closed when another is needed. Reopening one appends a new gzip member, which every gzip reader
concatenates. Parquet cannot be appended to: its rows are staged as CSV per partition and each
staging file is converted by duckdb (one thread, a memory limit) once the rows have passed its day, while
the next days' files are written (export_parquet.ConversionQueue).

Each file is written under a ``.partial`` name and renamed when the whole export has succeeded, so a
failed run leaves the previous complete files (and manifest) in place and no half-written one under the
final name. A rerun over the same days replaces their files and their manifest entries; the entries of
files it did not touch are kept while those files exist.

CSV encodes ``flags`` (a list) as a JSON array text (``[]``, ``["asn_mismatch"]``); the manifest's
``csv_types`` gives every CSV column's type for readers that should not guess (docs/researchers.md).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gatewatch.core.measurement import format_utc
from gatewatch.core.vocabulary import WITHHELD_CC

from .export_parquet import ConversionQueue
from .export_rows import Page, page_bytes
from .export_stream import row_partition, stream_pages
from .exports import (
    COLUMN_TYPES,
    csv_header,
    csv_line,
    jsonl_line,
    ooni_line,
)
from .store.base import MeasurementFilter, Store, StoredMeasurement

__all__ = [
    "MANIFEST_NAME",
    "PARTITION_FORMATS",
    "PartitionFormat",
    "export_partitioned",
    "export_selection",
    "partition_path",
]

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PartitionFormat:
    file_name: str
    encode: Callable[[StoredMeasurement], bytes]
    header: bytes = b""
    staged: bool = False  # written as CSV first, then converted (Parquet)


PARTITION_FORMATS: dict[str, PartitionFormat] = {
    "jsonl": PartitionFormat("measurements.jsonl.gz", jsonl_line),
    "csv": PartitionFormat("measurements.csv.gz", csv_line, csv_header()),
    "parquet": PartitionFormat("measurements.parquet", csv_line, csv_header(), staged=True),
    "ooni": PartitionFormat("measurements.ooni.jsonl.gz", ooni_line),
}
_CC = re.compile(r"[A-Z]{2}")
_PARTIAL = ".partial"
_STAGING = ".staging.csv"
_ROWS_PER_PAGE = 500  # rows encoded one by one, written a page at a time


def partition_path(row: StoredMeasurement, fmt: str = "jsonl") -> Path:
    """Where ``row`` goes, relative to the output folder."""
    return _partition_file(*row_partition(row), fmt)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _previous_entries(out_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
        return {entry["path"]: entry for entry in manifest["files"] if isinstance(entry, dict)}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one this program wrote
        return {}


def _write_manifest(out_dir: Path, written: dict[Path, int], fmt: str) -> None:
    entries = {
        path: entry for path, entry in _previous_entries(out_dir).items() if (out_dir / path).is_file()
    }
    for final, rows in written.items():
        relative = final.relative_to(out_dir).as_posix()
        entries[relative] = {
            "path": relative,
            "format": fmt,
            "rows": rows,
            "bytes": final.stat().st_size,
            "sha256": _sha256(final),
        }
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "generated_at": format_utc(datetime.now(UTC)),
        "partitioning": ["date", "cc"],
        "csv_types": COLUMN_TYPES,
        "files": [entries[path] for path in sorted(entries)],
    }
    partial = out_dir / (MANIFEST_NAME + _PARTIAL)
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(partial, out_dir / MANIFEST_NAME)


class _GzipWriter:
    """A gzip member appended to a file, reproducible: no time and no file name in its header, so the same
    rows give the same bytes (and the same SHA-256 in the manifest) on every run."""

    def __init__(self, path: Path, append: bool, compresslevel: int) -> None:
        self._raw = path.open("ab" if append else "wb")
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", compresslevel=compresslevel, fileobj=self._raw, mtime=0
        )

    def write(self, data: bytes) -> int:
        return self._gzip.write(data)

    def close(self) -> None:
        try:
            self._gzip.close()
        finally:
            self._raw.close()


def _open(path: Path, spec: PartitionFormat, append: bool, compresslevel: int) -> IO[bytes] | _GzipWriter:
    if spec.staged:
        return path.open("ab" if append else "wb")
    return _GzipWriter(path, append, compresslevel)


def _work_path(final: Path, spec: PartitionFormat) -> Path:
    """Where a file is written before the export succeeds (for Parquet: its JSON Lines staging)."""
    return final.with_name(final.name + (_STAGING if spec.staged else _PARTIAL))


def _remove_work(written: dict[Path, int], spec: PartitionFormat) -> None:
    for final in written:
        _work_path(final, spec).unlink(missing_ok=True)
        final.with_name(final.name + _PARTIAL).unlink(missing_ok=True)


def _partition_file(day: str, cc: str, fmt: str) -> Path:
    # Stored country codes are validated at ingest; anything else must still not become a path.
    return Path(
        f"date={day}", f"cc={cc if _CC.fullmatch(cc) else WITHHELD_CC}", PARTITION_FORMATS[fmt].file_name
    )


async def _write_pages(
    pages: AsyncIterable[Page],
    out_dir: Path,
    fmt: str,
    spec: PartitionFormat,
    max_open: int,
    compresslevel: int,
    written: dict[Path, int],
    converter: ConversionQueue | None = None,
) -> None:
    """Every page's records into their files' work paths, one write per file and page; ``written`` gets
    each final path begun and its row count. With ``converter`` (staged formats), each day's files are
    converted once the rows have passed that day, while the next days' are written."""
    open_files: OrderedDict[Path, IO[bytes] | _GzipWriter] = OrderedDict()  # least recently used first
    finals: dict[tuple[str, str], Path] = {}
    unconverted: dict[Path, str] = {}  # staged files not submitted to ``converter`` yet: their day
    try:
        async for page in pages:
            assert page.partitions is not None
            groups: dict[tuple[str, str], list[Any]] = {}
            for line, partition in zip(page.lines, page.partitions, strict=True):
                group = groups.get(partition)
                if group is None:
                    groups[partition] = group = []
                group.append(line)
            if converter is not None and groups:
                _convert_days_before(min(day for day, _ in groups), unconverted, open_files, converter, spec)
            for partition, lines in groups.items():
                final = finals.get(partition)
                if final is None:
                    final = finals[partition] = out_dir / _partition_file(*partition, fmt)
                if converter is not None and final not in unconverted:
                    if final in written:  # submitted already: a row out of day order, written after it
                        converter.wait()
                    unconverted[final] = partition[0]
                writer = open_files.get(final)
                if writer is not None:
                    open_files.move_to_end(final)
                else:
                    if len(open_files) >= max_open:
                        open_files.popitem(last=False)[1].close()
                    work = _work_path(final, spec)
                    if final in written:
                        writer = _open(work, spec, True, compresslevel)
                    else:
                        work.parent.mkdir(parents=True, exist_ok=True)
                        writer = _open(work, spec, False, compresslevel)
                        writer.write(spec.header)
                        written[final] = 0
                    open_files[final] = writer
                writer.write(page_bytes(lines))
                written[final] += len(lines)
        if converter is not None:
            _convert_days_before(None, unconverted, open_files, converter, spec)
    finally:
        for writer in open_files.values():
            writer.close()


def _convert_days_before(
    day: str | None,
    unconverted: dict[Path, str],
    open_files: OrderedDict[Path, IO[bytes] | _GzipWriter],
    converter: ConversionQueue,
    spec: PartitionFormat,
) -> None:
    """Close and submit every staged file of a day before ``day`` (None: all): rows come in start-time
    order, so those files are complete."""
    for final, its_day in list(unconverted.items()):
        if day is None or its_day < day:
            del unconverted[final]
            writer = open_files.pop(final, None)
            if writer is not None:
                writer.close()
            converter.submit(_work_path(final, spec), final.with_name(final.name + _PARTIAL))


async def _row_pages(rows: AsyncIterable[StoredMeasurement], fmt: str) -> AsyncIterator[Page]:
    encode, page = PARTITION_FORMATS[fmt].encode, Page([], [])
    async for row in rows:
        page.lines.append(encode(row))  # type: ignore[arg-type]
        page.partitions.append(row_partition(row))  # type: ignore[union-attr]
        if len(page.lines) >= _ROWS_PER_PAGE:
            yield page
            page = Page([], [])
    if page.lines:
        yield page


async def export_partitioned(
    rows: AsyncIterable[StoredMeasurement],
    out_dir: Path,
    fmt: str = "jsonl",
    *,
    max_open: int = 32,
    compresslevel: int = 6,
) -> list[Path]:
    """Write every row to its day's and country's file and update ``OUT/_manifest.json``; returns the data
    files written, sorted. Rows are encoded one by one (:mod:`.exports`): :func:`export_selection` reads
    a store the fast way.

    The file writes are blocking: this is meant for the command line, not the serving event loop.
    """
    _check(fmt, max_open)
    return await _export_pages(_row_pages(rows, fmt), Path(out_dir), fmt, max_open, compresslevel)


async def export_selection(
    store: Store,
    f: MeasurementFilter,
    out_dir: Path,
    fmt: str = "jsonl",
    *,
    max_open: int = 32,
    compresslevel: int = 6,
) -> list[Path]:
    """:func:`export_partitioned` of the store's selection ``f``, read and encoded a page at a time on a
    worker thread (:func:`.export_stream.stream_pages`: for SQLite, records written by SQL) while this
    thread compresses and writes; the same files, row for row."""
    _check(fmt, max_open)
    pages = stream_pages(store, fmt, f, partitioned=True)
    try:
        return await _export_pages(pages, Path(out_dir), fmt, max_open, compresslevel)
    finally:
        await pages.aclose()


def _check(fmt: str, max_open: int) -> None:
    if fmt not in PARTITION_FORMATS:
        raise ValueError(f"unknown partition format {fmt!r} (expected one of {', '.join(PARTITION_FORMATS)})")
    if max_open < 1:
        raise ValueError("max_open must be at least 1")


async def _export_pages(
    pages: AsyncIterable[Page], out_dir: Path, fmt: str, max_open: int, compresslevel: int
) -> list[Path]:
    spec = PARTITION_FORMATS[fmt]
    written: dict[Path, int] = {}
    converter = ConversionQueue() if spec.staged else None
    try:
        await _write_pages(pages, out_dir, fmt, spec, max_open, compresslevel, written, converter)
        if converter is not None:
            await asyncio.to_thread(converter.close)
            for final in written:
                _work_path(final, spec).unlink()
    except BaseException:
        if converter is not None:  # no file of this export is written to once this returns
            await asyncio.to_thread(converter.close, True)
        _remove_work(written, spec)
        raise
    for final in written:
        os.replace(final.with_name(final.name + _PARTIAL), final)
    if written:
        _write_manifest(out_dir, written, fmt)
    return sorted(written)

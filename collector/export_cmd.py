"""Daily partitioned export files for ``gatewatch-collector export``.

Layout: ``OUT/YYYY-MM-DD/<cc>/measurements.jsonl.gz`` (or ``measurements.csv.gz``), the day being the
measurement's start time in UTC. Rows arrive in the store's order (by start time), so the files being
written are mostly one day's; at most ``max_open`` are open at once and the least recently used is
closed when another is needed. Reopening one appends a new gzip member, which every gzip reader
concatenates.

Each file is written under a ``.partial`` name and renamed when the whole export has succeeded, so a
failed run leaves the previous complete files in place and no half-written one under the final name.
A rerun over the same days replaces their files.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable
from datetime import UTC
from pathlib import Path
from typing import IO

from gatewatch.core.vocabulary import WITHHELD_CC

from .exports import csv_header, csv_line, jsonl_line
from .store.base import StoredMeasurement

__all__ = ["PARTITION_FORMATS", "export_partitioned", "partition_path"]

# format → (file name, encoder of one row, bytes written first in each new file)
PARTITION_FORMATS: dict[str, tuple[str, Callable[[StoredMeasurement], bytes], bytes]] = {
    "jsonl": ("measurements.jsonl.gz", jsonl_line, b""),
    "csv": ("measurements.csv.gz", csv_line, csv_header()),
}
_CC = re.compile(r"[A-Z]{2}")
_PARTIAL = ".partial"


def partition_path(row: StoredMeasurement, fmt: str = "jsonl") -> Path:
    """Where ``row`` goes, relative to the output folder."""
    day = row.measurement_start_time.astimezone(UTC).strftime("%Y-%m-%d")
    # Stored country codes are validated at ingest; anything else must still not become a path.
    cc = row.probe_cc if _CC.fullmatch(row.probe_cc) else WITHHELD_CC
    return Path(day, cc, PARTITION_FORMATS[fmt][0])


async def export_partitioned(
    rows: AsyncIterable[StoredMeasurement],
    out_dir: Path,
    fmt: str = "jsonl",
    *,
    max_open: int = 32,
    compresslevel: int = 6,
) -> list[Path]:
    """Write every row to its day's and country's gzip file; returns the files written, sorted.

    The gzip writes are blocking: this is meant for the command line, not the serving event loop.
    """
    if fmt not in PARTITION_FORMATS:
        raise ValueError(f"unknown partition format {fmt!r} (expected one of {', '.join(PARTITION_FORMATS)})")
    if max_open < 1:
        raise ValueError("max_open must be at least 1")
    _, encode, header = PARTITION_FORMATS[fmt]
    out_dir = Path(out_dir)
    open_files: OrderedDict[Path, IO[bytes]] = OrderedDict()  # final path → writer, least recent first
    written: set[Path] = set()  # final paths begun in this run
    try:
        async for row in rows:
            final = out_dir / partition_path(row, fmt)
            writer = open_files.get(final)
            if writer is not None:
                open_files.move_to_end(final)
            else:
                if len(open_files) >= max_open:
                    open_files.popitem(last=False)[1].close()
                partial = final.with_name(final.name + _PARTIAL)
                if final in written:
                    writer = gzip.open(partial, "ab", compresslevel=compresslevel)
                else:
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    writer = gzip.open(partial, "wb", compresslevel=compresslevel)
                    writer.write(header)
                    written.add(final)
                open_files[final] = writer
            writer.write(encode(row))
    except BaseException:
        for writer in open_files.values():
            writer.close()
        for final in written:
            final.with_name(final.name + _PARTIAL).unlink(missing_ok=True)
        raise
    for writer in open_files.values():
        writer.close()
    for final in written:
        os.replace(final.with_name(final.name + _PARTIAL), final)
    return sorted(written)

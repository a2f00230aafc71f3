"""Parquet converted through a named pipe while the records are written (export_parquet.py): the same file
as the staged conversion, and a failure on either side ends the other with its error, in bounded time."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.collector import export_parquet
from gatewatch.collector.export_parquet import parquet_pipe, pipes_supported
from gatewatch.collector.exports import convert_to_parquet, csv_header, csv_line

from .test_export_rows import varied_rows

pytestmark = pytest.mark.skipif(not pipes_supported(), reason="no named pipes on this platform")


def _records(copies: int) -> bytes:
    lines = b"".join(csv_line(row) for row in varied_rows())
    return csv_header() + lines * copies


@pytest.mark.parametrize("copies", [0, 1, 400])
def test_same_file_as_the_staged_conversion(tmp_path: Path, copies: int) -> None:
    data = _records(copies)
    staging = tmp_path / "rows.csv"
    staging.write_bytes(data)
    convert_to_parquet(staging, tmp_path / "staged.parquet")
    with parquet_pipe(tmp_path, tmp_path / "piped.parquet") as out:
        for start in range(0, len(data), 7000):  # written in pieces, as pages arrive
            out.write(data[start : start + 7000])
    assert (tmp_path / "piped.parquet").read_bytes() == (tmp_path / "staged.parquet").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".pipe"] == []


def test_bad_records_raise_duckdbs_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="(?i)csv|conversion|column"):
        with parquet_pipe(tmp_path, tmp_path / "out.parquet") as out:
            out.write(csv_header() + b"not,enough,columns\r\n" * 50_000)
    assert not (tmp_path / "rows.csv.pipe").exists()


def test_a_writer_failure_ends_the_conversion(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="store failed"):
        with parquet_pipe(tmp_path, tmp_path / "out.parquet") as out:
            out.write(_records(1))
            raise KeyError("store failed")
    assert not (tmp_path / "rows.csv.pipe").exists()


def test_a_conversion_that_never_reads_fails_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise OSError("no DuckDB here")

    monkeypatch.setattr(export_parquet, "convert_to_parquet", broken)
    with pytest.raises(OSError, match="no DuckDB here"):
        with parquet_pipe(tmp_path, tmp_path / "out.parquet") as out:
            out.write(b"never read")

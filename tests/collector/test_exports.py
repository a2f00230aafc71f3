"""Research exports: JSON Lines, CSV and Parquet round trips, partitioned files, constant memory."""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import re
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from gatewatch.collector.export_cmd import export_partitioned
from gatewatch.collector.exports import (
    CSV_COLUMNS,
    duckdb_config,
    export,
    export_csv,
    export_jsonl,
    export_parquet,
)
from gatewatch.collector.store.base import StoredMeasurement
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.verdicts import Fingerprint, Verdict
from gatewatch.core.vocabulary import SCHEME_LONGTERM

START = datetime(2026, 11, 23, 13, 40, 5, tzinfo=UTC)
OONI_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ODD_INPUTS = [
    'http://example.com/a,b?q="quoted",x',
    "http://example.com/line\nbreak\r\nand\rreturn",
    "http://пример.испытание/ünïcödé/😀/\u2028/\u202e/ק",
    "",
    "=cmd|' /C calc'!A0",  # looks like a spreadsheet formula: exported as data, unchanged
]


def _verdict(blocking: str) -> Verdict:
    if blocking == "dns":
        fingerprint = Fingerprint(technique="dns.injection", stage="dns", injected_ips=["10.10.34.35"])
        return Verdict(
            blocking="dns", accessible=False, fingerprint=fingerprint, dns_consistency="inconsistent"
        )
    if blocking == "null":
        return Verdict(blocking=None, accessible=None)
    return Verdict(blocking=False, accessible=True, dns_consistency="consistent")


def make_row(
    index: int = 0,
    *,
    input: str = "https://example.org/",
    cc: str = "KH",
    start: datetime = START,
    blocking: str = "dns",
    flags: tuple[str, ...] = (),
) -> StoredMeasurement:
    """A stored row whose payload is a real measurement, as the ingest would store it."""
    verdict = _verdict(blocking)
    measurement = Measurement(
        measurement_start_time=start,
        test_start_time=start - timedelta(seconds=30),
        test_runtime=1.5,
        probe_asn="AS64501",
        probe_cc=cc,
        probe_network_name="Example ISP",
        input="https://example.org/",
        annotations={"platform": "linux"},
        test_keys=WebTestKeys(verdict=verdict),
    )
    # Set after validation: the model now refuses control characters in ``input``, but rows stored before
    # it did (or restored from elsewhere) may still hold them, and exports must carry them unchanged.
    measurement = measurement.model_copy(update={"input": input})
    return StoredMeasurement(
        measurement_uid=measurement.measurement_uid,
        received_at=start + timedelta(minutes=5, microseconds=index),
        measurement_start_time=start,
        probe_cc=cc,
        probe_asn="AS64501",
        test_name="web",
        input=input,
        domain="example.org",
        blocking=blocking,
        anomaly=blocking not in ("false", "null"),
        technique=verdict.fingerprint.technique if verdict.fingerprint else None,
        fingerprint_key=verdict.fingerprint.key if verdict.fingerprint else None,
        verdict_json=verdict.model_dump_json(),
        payload=measurement.to_json_bytes(),
        flags=flags,
    )


async def rows_of(rows: Iterable[StoredMeasurement]) -> AsyncIterator[StoredMeasurement]:
    for row in rows:
        yield row


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def parquet_rows(data: bytes, tmp_path: Path) -> tuple[list[tuple[str, str]], list[tuple]]:
    path = tmp_path / "read-back.parquet"
    path.write_bytes(data)
    with duckdb.connect() as con:
        types = [
            (name, kind) for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()
        ]
        # Timestamps as epoch seconds: fetching TIMESTAMPTZ as Python objects would need pytz.
        values = con.execute(
            "SELECT measurement_uid, epoch(measurement_start_time), probe_cc, probe_asn, test_name, input,"
            " domain, blocking, anomaly, technique, fingerprint_key, epoch(received_at), flags,"
            " signature_scheme, payload, signature, ephemeral_public_key, token, token_epoch, token_key_id"
            f" FROM '{path}'"
        ).fetchall()
    return types, values


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _entries(root: Path) -> list[str]:
    """Files and folders."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --- JSON Lines ------------------------------------------------------------------------------------


async def test_jsonl_is_ooni_measurements_with_the_servers_analysis() -> None:
    rows = [
        make_row(0, blocking="dns", flags=("asn_mismatch",)),
        make_row(1, blocking="false"),
        make_row(2, blocking="null"),
    ]
    data = await collect(export_jsonl(rows_of(rows)))
    lines = data.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    for line, row in zip(lines, rows, strict=False):
        doc = json.loads(line)
        original = json.loads(row.payload)
        assert doc["measurement_uid"] == row.measurement_uid
        assert doc["measurement_start_time"] == "2026-11-23 13:40:05"
        assert doc["test_start_time"] == "2026-11-23 13:39:35"
        assert OONI_TIME.match(doc["measurement_start_time"]) and OONI_TIME.match(doc["test_start_time"])
        # Everything else is the payload as it was signed, in its order.
        untouched = {k: v for k, v in original.items() if not k.endswith("_start_time")}
        assert {k: doc[k] for k in untouched} == untouched
        assert list(doc)[: len(original)] == list(original)
        assert doc["analysis"]["verdict"] == json.loads(row.verdict_json)
        assert doc["analysis"]["anomaly"] is row.anomaly
        assert doc["analysis"]["technique"] == row.technique
        assert doc["analysis"]["fingerprint_key"] == row.fingerprint_key
        assert doc["analysis"]["received_at"] == "2026-11-23T13:00:00Z"
        assert doc["analysis"]["flags"] == list(row.flags)
    assert [json.loads(line)["analysis"]["blocking"] for line in lines[:3]] == ["dns", False, None]


async def test_jsonl_publishes_only_measurement_fields() -> None:
    # A payload can't carry an address (validation forbids it); if a stored one ever did, it stays out.
    row = make_row()
    payload = json.loads(row.payload) | {"probe_ip": "203.0.113.9", "public_key": "c2VjcmV0"}
    row = replace(row, payload=json.dumps(payload).encode())
    data = await collect(export_jsonl(rows_of([row])))
    doc = json.loads(data)
    assert "probe_ip" not in doc and "public_key" not in doc and "signature" not in doc
    assert b"203.0.113.9" not in data and b"c2VjcmV0" not in data


async def test_jsonl_odd_inputs_round_trip() -> None:
    rows = [make_row(i, input=text) for i, text in enumerate(ODD_INPUTS)]
    data = await collect(export_jsonl(rows_of(rows)))
    lines = data.split(b"\n")
    assert len(lines) == len(ODD_INPUTS) + 1  # raw newlines in inputs never split a record
    assert [json.loads(line)["input"] for line in lines[:-1]] == ODD_INPUTS


async def test_lone_surrogate_is_not_fatal(tmp_path: Path) -> None:
    # A JSON "\ud800" escape has no UTF-8 form. JSON Lines keeps the escape; CSV and Parquet write "?".
    row = make_row(input="http://example.org/")
    payload = row.payload.replace(b'"input":"http://example.org/"', b'"input":"http://example.org/\\ud800"')
    row = replace(row, payload=payload, input="http://example.org/\ud800")
    data = await collect(export_jsonl(rows_of([row])))
    assert b"\\ud800" in data and json.loads(data)["input"] == "http://example.org/\ud800"
    assert b",http://example.org/?," in await collect(export_csv(rows_of([row])))
    parquet = await collect(export_parquet(rows_of([row]), tmp_dir=tmp_path))
    assert parquet_rows(parquet, tmp_path)[1][0][5] == "http://example.org/?"


# --- CSV -------------------------------------------------------------------------------------------


async def test_csv_round_trip_with_header_and_odd_inputs() -> None:
    rows = [make_row(i, input=text) for i, text in enumerate(ODD_INPUTS)]
    rows[0] = replace(rows[0], flags=("asn_mismatch", "cc_mismatch"))
    data = await collect(export_csv(rows_of(rows)))
    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert tuple(records[0]) == CSV_COLUMNS
    parsed = [dict(zip(CSV_COLUMNS, record, strict=True)) for record in records[1:]]
    assert [p["input"] for p in parsed] == ODD_INPUTS
    first = parsed[0]
    assert first["measurement_uid"] == rows[0].measurement_uid
    assert first["measurement_start_time"] == "2026-11-23T13:40:05Z"
    assert first["received_at"] == "2026-11-23T13:00:00Z"
    assert (first["probe_cc"], first["probe_asn"], first["test_name"], first["domain"]) == (
        "KH",
        "AS64501",
        "web",
        "example.org",
    )
    assert (first["blocking"], first["anomaly"], first["technique"]) == ("dns", "true", "dns.injection")
    assert first["fingerprint_key"] == rows[0].fingerprint_key
    assert json.loads(first["flags"]) == ["asn_mismatch", "cc_mismatch"]  # a JSON array text
    no_anomaly = (await collect(export_csv(rows_of([make_row(blocking="false")])))).decode().splitlines()[1]
    assert no_anomaly.split(",")[7:13] == ["false", "false", "", "", "2026-11-23T13:00:00Z", "[]"]


async def test_empty_selection_jsonl_and_csv() -> None:
    assert await collect(export_jsonl(rows_of([]))) == b""
    assert await collect(export_csv(rows_of([]))) == (",".join(CSV_COLUMNS) + "\r\n").encode()


@pytest.mark.parametrize("exporter", [export_jsonl, export_csv])
async def test_chunks_are_bounded_and_concatenate_to_the_whole(exporter: Callable) -> None:
    rows = [make_row(i) for i in range(40)]
    whole = await collect(exporter(rows_of(rows)))
    chunks = [chunk async for chunk in exporter(rows_of(rows), chunk_size=1024)]
    assert b"".join(chunks) == whole
    longest_record = max(len(line) for line in whole.splitlines(keepends=True))
    assert len(chunks) > 3
    assert all(len(chunk) < 1024 + longest_record for chunk in chunks)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        export("xml", rows_of([]))


# --- Parquet ---------------------------------------------------------------------------------------


async def test_parquet_round_trip_with_types(tmp_path: Path) -> None:
    rows = [
        make_row(i, input=text, blocking=("dns", "false", "null")[i % 3]) for i, text in enumerate(ODD_INPUTS)
    ]
    rows[0] = replace(rows[0], flags=("asn_mismatch",))
    work = tmp_path / "work"
    work.mkdir()
    data = await collect(export_parquet(rows_of(rows), tmp_dir=work))
    assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"
    assert _entries(work) == []  # the staging folder is gone
    types, values = parquet_rows(data, tmp_path)
    assert dict(types) == {
        "measurement_uid": "VARCHAR",
        "measurement_start_time": "TIMESTAMP WITH TIME ZONE",
        "probe_cc": "VARCHAR",
        "probe_asn": "VARCHAR",
        "test_name": "VARCHAR",
        "input": "VARCHAR",
        "domain": "VARCHAR",
        "blocking": "VARCHAR",
        "anomaly": "BOOLEAN",
        "technique": "VARCHAR",
        "fingerprint_key": "VARCHAR",
        "received_at": "TIMESTAMP WITH TIME ZONE",
        "flags": "VARCHAR[]",
        "signature_scheme": "VARCHAR",
        "payload": "VARCHAR",
        "signature": "VARCHAR",
        "ephemeral_public_key": "VARCHAR",
        "token": "VARCHAR",
        "token_epoch": "BIGINT",
        "token_key_id": "VARCHAR",
    }
    assert [name for name, _ in types] == list(CSV_COLUMNS)
    expected = [
        (
            r.measurement_uid,
            START.timestamp(),
            "KH",
            "AS64501",
            "web",
            r.input,
            "example.org",
            r.blocking,
            r.anomaly,
            r.technique,
            r.fingerprint_key,
            START.replace(minute=0, second=0).timestamp(),  # the hour, as in every export
            list(r.flags),
            SCHEME_LONGTERM,  # rows signed by a long-term key: the scheme only, never that key
            *[None] * 6,
        )
        for r in rows
    ]
    assert values == expected


async def test_parquet_empty_selection_has_the_schema(tmp_path: Path) -> None:
    types, values = parquet_rows(await collect(export_parquet(rows_of([]), tmp_dir=tmp_path)), tmp_path)
    assert [name for name, _ in types] == list(CSV_COLUMNS) and values == []


async def test_parquet_staging_is_removed_when_the_download_stops(tmp_path: Path) -> None:
    rows = [make_row(i) for i in range(300)]
    stream = export_parquet(rows_of(rows), chunk_size=512, tmp_dir=tmp_path)
    first = await anext(stream)
    staged = _files(tmp_path)
    assert first.startswith(b"PAR1") and len(staged) == 1 and staged[0].endswith("/measurements.parquet")
    await stream.aclose()  # what aiohttp does when the client goes away
    assert _entries(tmp_path) == []


# --- partitioned files -----------------------------------------------------------------------------


def _read_gzip_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as handle:
        return handle.read().splitlines()


async def test_partition_layout_by_utc_day_and_country(tmp_path: Path) -> None:
    plus7 = timezone(timedelta(hours=7))
    rows = [
        make_row(0, cc="KH", start=datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)),
        # 06:30 at +07:00 is 23:30 UTC the day before: partitioned by the UTC day.
        make_row(1, cc="KH", start=datetime(2026, 11, 24, 6, 30, tzinfo=plus7)),
        make_row(2, cc="MM", start=datetime(2026, 11, 24, 0, 0, tzinfo=UTC)),
        make_row(3, cc="KH", start=datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)),
        # A stored country code is validated at ingest; were one odd, it would still never be a path.
        replace(make_row(4, start=datetime(2026, 11, 24, 1, 0, tzinfo=UTC)), probe_cc="../.."),
    ]
    written = await export_partitioned(rows_of(rows), tmp_path / "out")
    relative = [p.relative_to(tmp_path / "out").as_posix() for p in written]
    assert relative == [
        "date=2026-11-23/cc=KH/measurements.jsonl.gz",
        "date=2026-11-24/cc=KH/measurements.jsonl.gz",
        "date=2026-11-24/cc=MM/measurements.jsonl.gz",
        "date=2026-11-24/cc=ZZ/measurements.jsonl.gz",
    ]
    assert _files(tmp_path) == sorted([*(f"out/{r}" for r in relative), "out/_manifest.json"])
    first_day = [json.loads(line)["measurement_uid"] for line in _read_gzip_lines(written[0])]
    assert first_day == [rows[0].measurement_uid, rows[1].measurement_uid]


async def test_partitioned_csv_with_one_open_file_reopens_and_appends(tmp_path: Path) -> None:
    # Alternating countries with room for one open file: every row closes and reopens a file.
    rows = [make_row(i, cc=("KH", "MM")[i % 2], input=f"https://example.org/{i},\n") for i in range(10)]
    written = await export_partitioned(rows_of(rows), tmp_path, fmt="csv", max_open=1)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "date=2026-11-23/cc=KH/measurements.csv.gz",
        "date=2026-11-23/cc=MM/measurements.csv.gz",
    ]
    with gzip.open(written[0], "rt", newline="") as handle:
        records = list(csv.reader(handle))
    assert tuple(records[0]) == CSV_COLUMNS and records.count(list(CSV_COLUMNS)) == 1
    assert [r[5] for r in records[1:]] == [f"https://example.org/{i},\n" for i in range(0, 10, 2)]


async def test_partitioned_rerun_replaces_and_failure_keeps_previous(tmp_path: Path) -> None:
    first = await export_partitioned(rows_of([make_row(0), make_row(1)]), tmp_path)
    again = await export_partitioned(rows_of([make_row(2)]), tmp_path)
    assert first == again and len(_read_gzip_lines(again[0])) == 1
    before = again[0].read_bytes()

    async def failing() -> AsyncIterator[StoredMeasurement]:
        yield make_row(3)
        yield make_row(4, start=START + timedelta(days=1))
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        await export_partitioned(failing(), tmp_path)
    assert again[0].read_bytes() == before
    # no .partial left behind
    assert _files(tmp_path) == ["_manifest.json", "date=2026-11-23/cc=KH/measurements.jsonl.gz"]


async def test_partitioned_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="xlsx"):
        await export_partitioned(rows_of([]), tmp_path, fmt="xlsx")
    assert await export_partitioned(rows_of([]), tmp_path) == []


# --- memory ----------------------------------------------------------------------------------------

TEMPLATE = make_row()


async def synthetic(count: int) -> AsyncIterator[StoredMeasurement]:
    """Rows made on demand (sharing one payload), so the source itself holds nothing."""
    for i in range(count):
        yield replace(
            TEMPLATE,
            measurement_uid=f"{i:036d}",
            input=f"https://example.org/{i}",
            probe_cc=("KH", "MM", "TH")[i % 3],
            measurement_start_time=START + timedelta(minutes=i),
        )


async def _drain(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(chunk) async for chunk in chunks])


async def _peak(run: Callable[[int], object], count: int) -> int:
    """The peak of what ``run(count)`` allocates, and only that: earlier tests' cyclic garbage is collected
    first and the collector held off meanwhile, so that a collection inside the window cannot run their
    finalizers there. (The partitioned case once failed at 3.3 MB against 1.2 MB depending on the tests
    run before it; its 1.2 MB is mostly the manifest's 1 MiB read buffer, so any few-MB allocation of
    someone else's in the window failed it. Held off, the window's garbage is this export's own.)"""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        await run(count)  # type: ignore[misc]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "partitioned"])
async def test_memory_does_not_grow_with_the_selection(fmt: str, tmp_path: Path) -> None:
    async def run(count: int) -> None:
        if fmt == "partitioned":
            # 500 rows span 1 day, 5,000 rows 4 days, in 3 countries: more files than may be open at once.
            await export_partitioned(synthetic(count), tmp_path / str(count), max_open=2)
        elif fmt == "parquet":
            await _drain(export_parquet(synthetic(count), tmp_dir=tmp_path))
        else:
            await _drain(export(fmt, synthetic(count)))

    await run(50)  # warm-up: imports and caches are not the export's growth
    small, large = await _peak(run, 500), await _peak(run, 5_000)
    # Ten times the rows; a buffered implementation would need about ten times the memory.
    assert large < 2.5 * small, (small, large)


def test_duckdb_never_fetches_or_loads_an_extension_by_itself(tmp_path: Path) -> None:
    """Collectors may have no network: an export's DuckDB must not try to download an extension. (Checked
    on the settings: trying a remote path would send traffic off the machine.)"""
    with duckdb.connect(":memory:", config=duckdb_config(temp_directory=str(tmp_path))) as con:
        settings = ("autoinstall_known_extensions", "autoload_known_extensions", "threads", "memory_limit")
        values = [con.execute(f"SELECT current_setting('{name}')").fetchone()[0] for name in settings]
    assert values[:3] == [False, False, 1]
    assert values[3] == "244.1 MiB"  # 256 MB

"""The JSON Lines records SQLite assembles (export_documents.py) against the exact path (exports.jsonl_line):
byte for byte for what agents store, value for value (and key order) for payloads spelt otherwise."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gatewatch.collector.export_documents import jsonl_pages
from gatewatch.collector.export_rows import page_bytes
from gatewatch.collector.exports import jsonl_line
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.collector.store.sqlite import SQLiteStore

from .test_export_rows import odd_receipts, token_signed, varied_rows
from .test_exports import START, make_row

BIG_BODY = ('<p>ünï "quoted" \\ back\nslash\t😀</p>' * 4000)[:150_000]


async def stored(path: Path, rows: list[StoredMeasurement]) -> list[StoredMeasurement]:
    store = await SQLiteStore.open(str(path))
    try:
        await store.insert_many(rows, [None] * len(rows))
        return [row async for row in store.iterate(MeasurementFilter(), batch=3)]
    finally:
        await store.close()


ALL = MeasurementFilter()


def fast(path: Path, f: MeasurementFilter = ALL, page_rows: int = 1000) -> bytes:
    with sqlite3.connect(path) as conn:
        return b"".join(page_bytes(page.lines) for page in jsonl_pages(conn, f, page_rows))


def _ordered(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """An object as Python reads it (the last of a repeated key wins, in the first one's place), with
    its key order kept for the comparison."""
    return list(dict(pairs).items())


def values(data: bytes) -> list[Any]:
    return [json.loads(line, object_pairs_hook=_ordered) for line in data.splitlines()]


@pytest.mark.parametrize("page_rows", [1, 5, 1000])
@pytest.mark.parametrize(
    "f",
    [
        MeasurementFilter(),
        MeasurementFilter(probe_cc="MM"),
        MeasurementFilter(since=START + timedelta(minutes=2), until=START + timedelta(minutes=6)),
    ],
)
async def test_the_records_are_the_exact_paths_bytes(
    tmp_path: Path, f: MeasurementFilter, page_rows: int
) -> None:
    """Odd inputs (quotes, CR/LF, unicode, U+2028, an empty one), every blocking, flags, token-signed rows,
    ties in start time, receipts before 1970 and year 1000, and a big body with quotes, backslashes and
    tabs in the payload."""
    rows = odd_receipts(varied_rows())
    body = make_row(99, input=BIG_BODY)
    payload = json.loads(body.payload)
    payload["test_keys"]["requests"] = [{"response": {"body": BIG_BODY, "code": 200}, "failure": None}]
    rows.append(
        token_signed(
            replace(body, payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()), 3
        )
    )
    path = tmp_path / "gatewatch.db"
    stored_rows = await stored(path, rows)
    selected = [row for row in stored_rows if f.probe_cc in (None, row.probe_cc)]
    if f.since is not None:
        selected = [row for row in selected if f.since <= row.measurement_start_time < f.until]  # type: ignore[operator]
    expected = b"".join(map(jsonl_line, selected))
    assert expected.count(b"\n") == len(selected) > 1
    assert fast(path, f, page_rows) == expected


# Payloads an agent does not write, each stored as it came; the exact path's output is the reference.
PAYLOADS = {
    "spaces and other spellings": '{ "measurement_uid" : "u", "input": "\\u00e9\\/x\\u001F",'
    ' "test_runtime": 1E5, "annotations": {"a": [ 1.50, -0, 1e-07, 12345678901234567890 ]},'
    ' "test_start_time": "2026-11-23T13:39:35Z" }',
    "a nested key twice": '{"measurement_uid":"u","annotations":{"k":1,"k":2},"test_keys":{"a":{"b":[]}}}',
    "no test_start_time": '{"measurement_uid":"u","input":"x"}',
    "test_start_time not text": '{"test_start_time":17,"input":"x"}',
    "test_start_time null": '{"test_start_time":null}',
    "test_start_time with an offset": '{"test_start_time":"2026-11-23T15:39:35.123+02:00"}',
    "test_start_time not a time": '{"test_start_time":"yesterday"}',
    "test_start_time escaped": '{"test_start_time":"2026-11-23T13:39:35\\u005a"}',
    "measurement_start_time last": '{"input":"x","measurement_start_time":"2000-01-01T00:00:00Z"}',
    "a lone surrogate": '{"input":"\\ud800 and \\udfff","annotations":{"\\ud83d":"x"}}',
    "empty object": "{}",
}
# Written the exact way: the same bytes.
EXACT_PAYLOADS = {
    "an unknown key": '{"measurement_uid":"u","probe_ip":"192.0.2.7","input":"x"}',
    "analysis in the payload": '{"input":"x","analysis":{"forged":true}}',
    "a key twice": '{"input":"x","input":"y","test_start_time":"2026-11-23T13:39:35Z"}',
    "test_start_time twice": '{"test_start_time":"2026-11-23T13:39:35Z","test_start_time":"x"}',
    "NaN": '{"input":"x","test_runtime":NaN}',
}


@pytest.mark.parametrize(
    "payload", list(PAYLOADS.values()) + list(EXACT_PAYLOADS.values()), ids=[*PAYLOADS, *EXACT_PAYLOADS]
)
async def test_payloads_spelt_otherwise_give_the_same_values(tmp_path: Path, payload: str) -> None:
    plain = make_row(0)
    odd = replace(make_row(1, start=START + timedelta(seconds=1)), payload=payload.encode())
    rows = await stored(
        tmp_path / "gatewatch.db", [plain, token_signed(odd, 2), replace(odd, measurement_uid="x")]
    )
    expected = b"".join(map(jsonl_line, rows))
    got = fast(tmp_path / "gatewatch.db")
    if payload in EXACT_PAYLOADS.values():
        assert got == expected
    elif "NaN" not in payload:
        assert values(got) == values(expected)
        assert got.splitlines()[0] == expected.splitlines()[0]  # the agent's row, byte for byte
        if "1E5" in payload:  # written by SQLite, as stored
            assert b'"test_runtime":1E5' in got and b'"test_runtime":100000.0' in expected


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', '{"input":'])
async def test_a_payload_that_is_no_object_fails_both_ways(tmp_path: Path, payload: str) -> None:
    (row,) = await stored(tmp_path / "gatewatch.db", [replace(make_row(0), payload=payload.encode())])
    with pytest.raises((AttributeError, ValueError)) as exact:
        jsonl_line(row)
    with pytest.raises(exact.type):
        fast(tmp_path / "gatewatch.db")


def test_a_lone_surrogate_in_a_verdict_is_escaped(tmp_path: Path) -> None:
    """A verdict holding a lone surrogate (a JSON escape) has no UTF-8 form: it is written escaped."""
    row = replace(make_row(0), verdict_json='{"blocking":false,"note":"\\udc80"}')
    import asyncio

    rows = asyncio.run(stored(tmp_path / "gatewatch.db", [row]))
    got = fast(tmp_path / "gatewatch.db")
    assert values(got) == values(jsonl_line(rows[0]))
    assert b"\\udc80" in got


def test_nan_is_read_as_nan(tmp_path: Path) -> None:
    import asyncio

    row = replace(make_row(0), payload=EXACT_PAYLOADS["NaN"].encode())
    asyncio.run(stored(tmp_path / "gatewatch.db", [row]))
    assert math.isnan(json.loads(fast(tmp_path / "gatewatch.db"))["test_runtime"])

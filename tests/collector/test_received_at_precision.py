"""``received_at`` never leaves the collector finer than the hour: not in JSON Lines, CSV or Parquet, not in
the API's listing or its export. To the second, it would let whoever sees a volunteer connect to the
collector (a national gateway) pair that connection with the batch it carried. The store keeps it exact."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.collector.exports import export_csv, export_jsonl, export_parquet, public_received_at
from gatewatch.collector.settings import Settings
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement

from .test_exports import collect, make_row, rows_of
from .test_research import PUBLIC_KEY, SIGNATURE, wire
from .test_research import make_row as stored_row

# Every part below the hour set, at the edges of each field: what must not leave the collector.
MOMENTS = [
    datetime(2026, 11, 23, 10, 42, 17, 123456, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 6, 30, 12, 0, 1, tzinfo=UTC),
    datetime(2026, 6, 30, 12, 1, tzinfo=UTC),
]


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:00:00Z")


def _received(row: StoredMeasurement, moment: datetime) -> StoredMeasurement:
    return replace(row, received_at=moment)


@pytest.mark.parametrize("moment", MOMENTS)
def test_the_public_form_is_the_hour(moment: datetime) -> None:
    assert public_received_at(moment) == _hour(moment)


@pytest.mark.parametrize("moment", MOMENTS)
async def test_jsonl_and_csv_carry_the_hour_only(moment: datetime) -> None:
    row = _received(make_row(), moment)
    document = json.loads(await collect(export_jsonl(rows_of([row]))))
    assert document["analysis"]["received_at"] == _hour(moment)
    records = list(csv.DictReader(io.StringIO((await collect(export_csv(rows_of([row])))).decode())))
    assert records[0]["received_at"] == _hour(moment)


async def test_parquet_carries_the_hour_only(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 23, 10, 42, 17, 123456, tzinfo=UTC)
    data = await collect(export_parquet(rows_of([_received(make_row(), moment)]), tmp_dir=tmp_path))
    path = tmp_path / "out.parquet"
    path.write_bytes(data)
    with duckdb.connect() as con:
        (epoch,) = con.execute(f"SELECT epoch(received_at) FROM '{path}'").fetchone()  # type: ignore[misc]
    assert epoch == datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()


async def test_the_api_lists_and_exports_the_hour_and_the_store_keeps_the_second(
    aiohttp_client, store_url: str, tmp_path: Path
) -> None:
    client = await aiohttp_client(wire(create_app(Settings(db=store_url))))
    moment = datetime(2026, 11, 23, 10, 42, 17, 123456, tzinfo=UTC)
    row = stored_row(moment - timedelta(minutes=3))
    row = _received(row, moment)
    assert all(await client.app[STORE_KEY].insert_many([row], [(SIGNATURE, PUBLIC_KEY)]))

    listing = await (await client.get("/api/v1/measurements")).json()
    assert [item["received_at"] for item in listing["results"]] == ["2026-11-23T10:00:00Z"]
    for fmt in ("jsonl", "csv"):
        body = await (await client.get("/api/v1/measurements/export", params={"format": fmt})).read()
        assert b"2026-11-23T10:00:00Z" in body
        assert b"10:42" not in body and b"42:17" not in body
    parquet = await (await client.get("/api/v1/measurements/export", params={"format": "parquet"})).read()
    path = tmp_path / "api.parquet"
    path.write_bytes(parquet)
    with duckdb.connect() as con:
        (epoch,) = con.execute(f"SELECT epoch(received_at) FROM '{path}'").fetchone()  # type: ignore[misc]
    assert epoch == datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()

    stored, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert stored[0].received_at == moment  # exact for operators

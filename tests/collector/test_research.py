"""The research API (GET /api/v1/measurements and its streaming export), against both stores."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from aiohttp import web

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import INFLIGHT_KEY, STORE_KEY
from gatewatch.collector.exports import CSV_COLUMNS
from gatewatch.collector.research import EXPORT_PATH, LIST_PATH, _client_cursor, add_research_routes
from gatewatch.collector.settings import Settings
from gatewatch.collector.store.base import MeasurementFilter, StoredMeasurement
from gatewatch.core.measurement import Measurement, WebTestKeys, new_measurement_uid
from gatewatch.core.verdicts import Verdict
from gatewatch.core.wire import MeasurementPage

from .test_export_process import export_children

# Distinctive envelope bytes stored beside every row: no response may carry them in any form.
SIGNATURE = b"SIGNATURE-must-never-be-exported".ljust(64, b"!")
PUBLIC_KEY = b"PUBLIC-KEY-never-exported-000000"
SECRETS = (SIGNATURE, PUBLIC_KEY, base64.b64encode(SIGNATURE), base64.b64encode(PUBLIC_KEY))
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROW_KEYS = {
    "measurement_uid",
    "measurement_start_time",
    "probe_cc",
    "probe_asn",
    "test_name",
    "input",
    "domain",
    "blocking",
    "anomaly",
    "technique",
    "fingerprint_key",
    "verdict",
    "received_at",
    "flags",
}


def wire(app: web.Application) -> web.Application:
    """Add the research routes unless create_app already does (it will, once wired)."""
    if not any(r.resource is not None and r.resource.canonical == EXPORT_PATH for r in app.router.routes()):
        add_research_routes(app)
    return app


@pytest.fixture
async def client(aiohttp_client, store_url: str):
    return await aiohttp_client(wire(create_app(Settings(db=store_url, accept_identified=True))))


def make_row(
    start: datetime,
    *,
    cc: str = "XL",
    asn: str = "AS64501",
    url: str = "http://a.lab/",
    blocking: str = "false",
    uid: str | None = None,
    flags: tuple[str, ...] = (),
) -> StoredMeasurement:
    """A row as ingest stores it: the payload is a real measurement's bytes, the verdict a real Verdict."""
    uid = uid or new_measurement_uid()
    m = Measurement(
        measurement_uid=uid,
        measurement_start_time=start,
        test_start_time=start,
        test_runtime=0.5,
        probe_asn=asn,
        probe_cc=cc,
        input=url,
        test_keys=WebTestKeys(),
    )
    verdict = Verdict(
        blocking={"false": False, "null": None}.get(blocking, blocking),
        accessible=blocking == "false" or None,
    )
    anomalous = blocking not in ("false", "null")
    return StoredMeasurement(
        measurement_uid=uid,
        received_at=start + timedelta(seconds=5),
        measurement_start_time=start,
        probe_cc=cc,
        probe_asn=asn,
        test_name="web",
        input=url,
        domain=url.split("/")[2].split(":")[0].lower(),
        blocking=blocking,
        anomaly=anomalous,
        technique="dns.injection" if blocking == "dns" else None,
        fingerprint_key="0123456789abcdef" if anomalous else None,
        verdict_json=verdict.model_dump_json(),
        payload=m.to_json_bytes(),
        flags=flags,
    )


async def insert(client, rows: list[StoredMeasurement]) -> None:
    inserted = await client.app[STORE_KEY].insert_many(rows, [(SIGNATURE, PUBLIC_KEY)] * len(rows))
    assert all(inserted)


def dataset() -> list[StoredMeasurement]:
    """Rows varying every filtered column, a few sharing a start time (ordering ties break on uid)."""
    blockings = ("false", "dns", "tcp_ip", "http-failure", "http-diff", "null")
    rows = []
    for i in range(24):
        rows.append(
            make_row(
                T0 + timedelta(minutes=10 * (i // 2)),
                cc=("XL", "XM")[i % 2],
                asn=("AS64501", "AS64502", "AS64503")[i % 3],
                url=("http://a.lab/", "http://B.lab:8080/x", "https://c.lab/")[i % 3 if i < 20 else 0],
                blocking=blockings[i % 6],
                flags=("asn_mismatch",) if i == 7 else (),
            )
        )
    return rows


def order(rows: list[StoredMeasurement]) -> list[str]:
    return [
        r.measurement_uid for r in sorted(rows, key=lambda r: (r.measurement_start_time, r.measurement_uid))
    ]


async def get_json(client, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.get(path, params=params)
    assert response.content_type == "application/json"
    body = await response.read()
    for secret in SECRETS:
        assert secret not in body
    return response.status, json.loads(body)


async def all_pages(client, params: dict[str, str], limit: int) -> tuple[list[str], int]:
    uids: list[str] = []
    cursor: str | None = None
    for pages in range(1, 200):  # bounded: a cursor that never ends must fail, not hang
        query = {**params, "limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        status, page = await get_json(client, LIST_PATH, query)
        assert status == 200, page
        assert len(page["results"]) <= limit
        uids += [r["measurement_uid"] for r in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return uids, pages
    raise AssertionError("pagination did not end")


FILTERS: list[tuple[dict[str, str], Callable[[StoredMeasurement], bool]]] = [
    ({}, lambda r: True),
    ({"probe_cc": "XL"}, lambda r: r.probe_cc == "XL"),
    ({"probe_cc": "xm"}, lambda r: r.probe_cc == "XM"),
    ({"probe_asn": "AS64502"}, lambda r: r.probe_asn == "AS64502"),
    ({"probe_asn": "64503"}, lambda r: r.probe_asn == "AS64503"),
    ({"test_name": "web"}, lambda r: True),
    ({"test_name": "dns"}, lambda r: False),
    ({"input": "http://B.lab:8080/x"}, lambda r: r.input == "http://B.lab:8080/x"),
    ({"domain": "B.LAB"}, lambda r: r.domain == "b.lab"),
    ({"since": "2026-03-01T12:30:00Z"}, lambda r: r.measurement_start_time >= T0 + timedelta(minutes=30)),
    ({"until": "2026-03-01T13:30:00+01:00"}, lambda r: r.measurement_start_time < T0 + timedelta(minutes=30)),
    (
        {"since": "2026-03-01T12:20:00", "until": "2026-03-01T13:00:00Z"},
        lambda r: T0 + timedelta(minutes=20) <= r.measurement_start_time < T0 + timedelta(minutes=60),
    ),
    ({"since": "2026-03-02"}, lambda r: False),
    ({"anomaly": "true"}, lambda r: r.anomaly),
    ({"anomaly": "False"}, lambda r: not r.anomaly),
    *[({"blocking": b}, lambda r, b=b: r.blocking == b) for b in ("false", "dns", "http-diff", "null")],
    (
        {"probe_cc": "XL", "anomaly": "true", "domain": "a.lab"},
        lambda r: r.probe_cc == "XL" and r.anomaly and r.domain == "a.lab",
    ),
]


async def test_filters_select_what_they_say(client) -> None:
    rows = dataset()
    await insert(client, rows)
    for params, wanted in FILTERS:
        status, page = await get_json(client, LIST_PATH, {**params, "limit": "1000"})
        assert status == 200, (params, page)
        assert [r["measurement_uid"] for r in page["results"]] == order([r for r in rows if wanted(r)]), (
            params
        )
        assert page["next_cursor"] is None


async def test_rows_carry_the_servers_verdict_and_nothing_identifying(client) -> None:
    rows = dataset()
    await insert(client, rows)
    status, page = await get_json(client, LIST_PATH, {"limit": "1000"})
    assert status == 200
    by_uid = {r.measurement_uid: r for r in rows}
    assert len(page["results"]) == len(rows)
    for item in page["results"]:
        assert set(item) == ROW_KEYS
        row = by_uid[item["measurement_uid"]]
        assert item["blocking"] == {"false": False, "null": None}.get(row.blocking, row.blocking)
        assert item["anomaly"] is row.anomaly
        assert item["verdict"] == json.loads(row.verdict_json)
        assert item["verdict"]["blocking"] == item["blocking"]
        assert item["measurement_start_time"] == row.measurement_start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (item["probe_cc"], item["probe_asn"], item["input"], item["domain"]) == (
            row.probe_cc,
            row.probe_asn,
            row.input,
            row.domain,
        )
        assert item["flags"] == list(row.flags)
        assert (item["technique"], item["fingerprint_key"]) == (row.technique, row.fingerprint_key)


async def test_a_submitted_measurement_is_listed_with_the_recomputed_verdict(client, sign) -> None:
    response = await client.post("/api/v1/measurements", json={"measurements": [sign()]})
    (result,) = (await response.json())["results"]
    assert result["status"] == "accepted"
    status, page = await get_json(client, LIST_PATH)
    assert status == 200
    (item,) = page["results"]
    assert item["measurement_uid"] == result["measurement_uid"]
    # No control and no observations: the server's analysis cannot judge, whatever an agent claimed.
    assert item["blocking"] is None and item["anomaly"] is False
    assert item["verdict"]["blocking"] is None


async def test_every_page_fits_the_wire_contract(client, sign) -> None:
    """Rows are served as stored (not re-validated), so this is what keeps them to MeasurementPage."""
    await insert(client, dataset())
    response = await client.post("/api/v1/measurements", json={"measurements": [sign()]})
    assert response.status == 200
    status, page = await get_json(client, LIST_PATH, {"limit": "1000"})
    assert status == 200 and len(page["results"]) > 1
    assert MeasurementPage.model_validate(page).model_dump(mode="json") == page


async def test_a_row_another_version_stored_is_served_as_stored(client) -> None:
    """A blocking value or a verdict field this version does not know must not fail the page it is on."""
    start = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    odd = dataclasses.replace(
        make_row(start, blocking="dns"),
        blocking="tls",
        verdict_json=json.dumps({"blocking": "tls", "accessible": False, "added_later": 1}),
    )
    await insert(client, [odd, make_row(start + timedelta(minutes=1))])
    status, page = await get_json(client, LIST_PATH)
    assert status == 200 and len(page["results"]) == 2
    first = page["results"][0]
    assert first["blocking"] == "tls" and first["verdict"]["added_later"] == 1
    response = await client.get(EXPORT_PATH, params={"format": "jsonl"})
    lines = (await response.read()).decode().splitlines()
    assert response.status == 200 and len(lines) == 2
    assert json.loads(lines[0])["analysis"]["blocking"] == "tls"


async def test_pages_cover_the_selection_without_gaps_or_duplicates(client) -> None:
    rows = [make_row(T0 + timedelta(seconds=i // 4), cc=("XL", "XM")[i % 2]) for i in range(57)]
    await insert(client, rows)
    for limit in (1, 10, 57, 100):
        uids, pages = await all_pages(client, {}, limit)
        assert uids == order(rows), limit
        assert pages == -(-len(rows) // limit)  # the last page says it is the last: no empty page after it
    uids, _ = await all_pages(client, {"probe_cc": "XM"}, 7)
    assert uids == order([r for r in rows if r.probe_cc == "XM"])
    # Rows arriving during pagination after the cursor's position are picked up; none is repeated.
    status, first = await get_json(client, LIST_PATH, {"limit": "10"})
    late = make_row(T0 + timedelta(days=1))
    await insert(client, [late])
    query = {"limit": "1000", "cursor": first["next_cursor"]}
    status, second = await get_json(client, LIST_PATH, query)
    assert status == 200
    seen = [r["measurement_uid"] for r in first["results"] + second["results"]]
    assert seen == order([*rows, late])


BAD_QUERIES: list[tuple[dict[str, str], str, str]] = [
    ({"probe_cc": "XYZ"}, "invalid_parameter", "probe_cc"),
    ({"probe_cc": "X1"}, "invalid_parameter", "probe_cc"),
    ({"probe_cc": "XL\n"}, "invalid_parameter", "probe_cc"),
    ({"probe_asn": "AS\u0664\u0665"}, "invalid_parameter", "probe_asn"),  # digits, but not ASCII ones
    ({"probe_asn": "ASX"}, "invalid_parameter", "probe_asn"),
    ({"probe_asn": "AS12345678901"}, "invalid_parameter", "probe_asn"),
    ({"test_name": "web; DROP TABLE"}, "invalid_parameter", "test_name"),
    ({"since": "yesterday"}, "invalid_parameter", "since"),
    ({"until": "2026-13-01"}, "invalid_parameter", "until"),
    ({"since": "0001-01-01T00:00:00+05:00"}, "invalid_parameter", "since"),
    ({"since": "2026-03-02", "until": "2026-03-01"}, "invalid_parameter", "since"),
    ({"anomaly": "maybe"}, "invalid_parameter", "anomaly"),
    ({"blocking": "tls"}, "invalid_parameter", "blocking"),
    ({"blocking": "False"}, "invalid_parameter", "blocking"),
    ({"input": "http://a.lab/\x00"}, "invalid_parameter", "input"),
    ({"input": "http://a.lab/" + "x" * 2048}, "invalid_parameter", "input"),
    ({"domain": "d" * 254}, "invalid_parameter", "domain"),
    ({"probe_cc": ""}, "invalid_parameter", "probe_cc"),
    ({"cc": "XL"}, "unknown_parameter", "cc"),
]
LIST_ONLY: list[tuple[dict[str, str], str, str]] = [
    ({"limit": "0"}, "invalid_parameter", "limit"),
    ({"limit": "1001"}, "invalid_parameter", "limit"),
    ({"limit": "ten"}, "invalid_parameter", "limit"),
    ({"limit": "-1"}, "invalid_parameter", "limit"),
    ({"limit": "\u0661\u0660"}, "invalid_parameter", "limit"),
    ({"limit": "9" * 2000}, "invalid_parameter", "limit"),
    ({"format": "csv"}, "unknown_parameter", "format"),
]
EXPORT_ONLY: list[tuple[dict[str, str], str, str]] = [
    ({"format": "xml"}, "invalid_parameter", "format"),
    ({"format": "JSONL"}, "invalid_parameter", "format"),
    ({"limit": "10"}, "unknown_parameter", "limit"),
    ({"cursor": "abc"}, "unknown_parameter", "cursor"),
]


async def test_bad_values_are_400_with_a_reason(client) -> None:
    await insert(client, dataset()[:2])
    cases = [(LIST_PATH, *case) for case in BAD_QUERIES + LIST_ONLY]
    cases += [(EXPORT_PATH, *case) for case in BAD_QUERIES + EXPORT_ONLY]
    for path, params, error, named in cases:
        status, body = await get_json(client, path, params)
        assert status == 400, (path, params, body)
        assert body["error"] == error and named in body["detail"], (path, params, body)
    for path in (LIST_PATH, EXPORT_PATH):
        response = await client.get(f"{path}?probe_cc=XL&probe_cc=XM")
        assert response.status == 400 and (await response.json())["error"] == "repeated_parameter"
        # Not UTF-8 (a lone surrogate's encoding, bytes that are never UTF-8): never a server error.
        for raw in ("a.lab%ED%A0%80", "%ff%fe"):
            response = await client.get(f"{path}?domain={raw}")
            assert response.status in (200, 400), raw
    # The store still answers: nothing above reached it in a form it choked on.
    assert (await client.get("/readyz")).status == 200


async def test_a_tampered_cursor_is_400(client) -> None:
    await insert(client, dataset())
    status, page = await get_json(client, LIST_PATH, {"limit": "5", "probe_cc": "XL"})
    cursor = page["next_cursor"]
    position, check = cursor.rsplit(".", 1)
    flipped = position[:10] + ("A" if position[10] != "A" else "B") + position[11:]

    def forged(when: str, uid: str) -> str:
        raw = base64.urlsafe_b64encode(json.dumps([when, uid]).encode()).decode().rstrip("=")
        return _client_cursor(raw, MeasurementFilter(probe_cc="XL"))

    bad = [
        f"{flipped}.{check}",
        f"{position}.{check[:-1]}{'0' if check[-1] != '0' else '1'}",
        position,
        cursor[:-3],
        cursor + "x",
        "",
        "%%%",
        "a" * 600,
        forged("0001-01-01T00:00:00+00:00", "x" * 36),  # a check that fits, a position no store made
        forged("2026-03-01T12:00:00", "0" * 36),  # no zone
        forged("not a time", "0" * 36),
        _client_cursor("bm90IGpzb24", MeasurementFilter(probe_cc="XL")),  # "not json"
    ]
    for tampered in bad:
        status, body = await get_json(client, LIST_PATH, {"limit": "5", "probe_cc": "XL", "cursor": tampered})
        assert status == 400, (tampered, body)
        assert body["error"] in ("invalid_cursor", "invalid_parameter"), body
    # A cursor is bound to its filters: replayed with others it would silently skip or repeat rows.
    for other in ({"probe_cc": "XM"}, {}, {"probe_cc": "XL", "anomaly": "true"}):
        status, body = await get_json(client, LIST_PATH, {**other, "cursor": cursor})
        assert (status, body["error"]) == (400, "invalid_cursor"), other
    # Equivalent spellings of the same filters keep the cursor valid, and so does another page size.
    status, body = await get_json(client, LIST_PATH, {"limit": "7", "probe_cc": "xl", "cursor": cursor})
    assert status == 200
    status, body = await get_json(
        client, LIST_PATH, {"cursor": forged("2026-03-01T12:00:00+00:00", "0" * 36)}
    )
    assert status == 400  # checked against probe_cc=XL, used without it


def parquet_rows(data: bytes, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "download.parquet"
    path.write_bytes(data)
    with duckdb.connect() as con:
        # The start time as epoch seconds: fetching TIMESTAMPTZ as Python objects would need pytz.
        cursor = con.execute(
            "SELECT measurement_uid, epoch(measurement_start_time) AS start, anomaly, flags"
            f" FROM read_parquet('{path}')"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
async def test_export_round_trips(client, fmt: str, tmp_path: Path) -> None:
    rows = dataset()
    await insert(client, rows)
    wanted = [r for r in rows if r.probe_cc == "XL"]
    response = await client.get(EXPORT_PATH, params={"format": fmt, "probe_cc": "XL"})
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    expected_type = {
        "jsonl": "application/x-ndjson",
        "csv": "text/csv",
        "parquet": "application/vnd.apache.parquet",
    }
    assert response.content_type == expected_type[fmt]
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="gatewatch-measurements-')
    assert disposition.endswith(f'.{fmt}"')
    data = await response.read()
    for secret in SECRETS:
        assert secret not in data
    if fmt == "jsonl":
        docs = [json.loads(line) for line in data.decode().splitlines()]
        assert [d["measurement_uid"] for d in docs] == order(wanted)
        by_uid = {r.measurement_uid: r for r in wanted}
        for doc in docs:
            row = by_uid[doc["measurement_uid"]]
            assert set(doc) - {"analysis", "signed"} <= set(Measurement.model_fields)
            assert doc["measurement_start_time"] == row.measurement_start_time.strftime("%Y-%m-%d %H:%M:%S")
            assert doc["analysis"]["blocking"] == {"false": False, "null": None}.get(
                row.blocking, row.blocking
            )
            assert doc["analysis"]["verdict"] == json.loads(row.verdict_json)
    elif fmt == "csv":
        records = list(csv.DictReader(io.StringIO(data.decode())))
        assert tuple(records[0]) == CSV_COLUMNS
        assert [r["measurement_uid"] for r in records] == order(wanted)
        assert {r["probe_cc"] for r in records} == {"XL"}
        assert {r["blocking"] for r in records} == {r.blocking for r in wanted}
    else:
        records = parquet_rows(data, tmp_path)
        assert [r["measurement_uid"] for r in records] == order(wanted)
        by_uid = {r.measurement_uid: r for r in wanted}
        for record in records:
            row = by_uid[record["measurement_uid"]]
            assert record["start"] == row.measurement_start_time.timestamp()
            assert record["anomaly"] is row.anomaly
            assert record["flags"] == list(row.flags)


async def test_export_of_an_empty_selection(client, tmp_path: Path) -> None:
    await insert(client, dataset())
    params = {"probe_cc": "ZZ"}
    response = await client.get(EXPORT_PATH, params=params)  # jsonl by default
    assert (response.status, response.content_type, await response.read()) == (
        200,
        "application/x-ndjson",
        b"",
    )
    response = await client.get(EXPORT_PATH, params={**params, "format": "csv"})
    assert list(csv.reader(io.StringIO(await response.text()))) == [list(CSV_COLUMNS)]
    response = await client.get(EXPORT_PATH, params={**params, "format": "parquet"})
    assert parquet_rows(await response.read(), tmp_path) == []


@contextlib.asynccontextmanager
async def serve(app: web.Application, handler_cancellation: bool) -> AsyncIterator[tuple[str, int]]:
    """The app behind a runner as the collector's CLI builds it (the test client always cancels handlers
    of lost connections; the CLI leaves them running, as aiohttp does by default)."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield host, port
    finally:
        await runner.cleanup()


async def start_export(
    address: tuple[str, int], query: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw loopback connection with a tiny receive window, so that the server cannot get far ahead of
    what is read (the kernel's buffers would otherwise swallow a whole test-sized export)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {EXPORT_PATH}?{query} HTTP/1.1\r\nHost: collector\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    await asyncio.wait_for(reader.readexactly(2000), 5)  # the download is under way
    return reader, writer


async def wait_until_idle(app: web.Application) -> None:
    # drain() also marks the app as stopping, which only makes later responses close their connection.
    await asyncio.wait_for(app[INFLIGHT_KEY].drain(), 10)


def big_dataset(count: int) -> list[StoredMeasurement]:
    # Long inputs make each JSON line ~3 KB: the export is several megabytes without many rows.
    return [make_row(T0 + timedelta(seconds=i), url=f"http://a.lab/{i}/" + "p" * 2000) for i in range(count)]


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_client_disconnect_mid_export_is_not_an_error(
    store_url: str, caplog: pytest.LogCaptureFixture, handler_cancellation: bool
) -> None:
    caplog.set_level(logging.INFO)
    app = wire(create_app(Settings(db=store_url, accept_identified=True)))
    async with serve(app, handler_cancellation) as address:
        await app[STORE_KEY].insert_many(big_dataset(1500), [(SIGNATURE, PUBLIC_KEY)] * 1500)
        reader, writer = await start_export(address, "format=jsonl")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        writer.close()
        await wait_until_idle(app)
        if not handler_cancellation:  # the handler ran on and met the closed connection
            assert any(r.getMessage() == "export abandoned by the client" for r in caplog.records)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        reader, writer = await start_export(address, "format=csv")  # still serving
        writer.close()


async def test_a_failure_mid_export_truncates_the_download(store_url: str, caplog) -> None:
    # The export is made by a child process (export_process.py): it dies mid-way, as on a store failure.
    app = wire(create_app(Settings(db=store_url, accept_identified=True)))
    async with serve(app, handler_cancellation=False) as address:
        await app[STORE_KEY].insert_many(big_dataset(2500), [(SIGNATURE, PUBLIC_KEY)] * 2500)
        reader, writer = await start_export(address, "format=jsonl")
        (child,) = export_children()
        os.kill(child, signal.SIGKILL)
        received = bytearray()
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
        writer.close()
        # The connection was cut before the chunked encoding's last (empty) chunk: visibly incomplete.
        assert not received.endswith(b"\r\n0\r\n\r\n")
        await wait_until_idle(app)
        assert any(r.getMessage() == "export failed mid-stream" for r in caplog.records)


async def test_a_store_down_before_the_export_starts_is_503(client) -> None:
    await client.app[STORE_KEY].close()
    for path in (EXPORT_PATH, LIST_PATH):
        response = await client.get(path)
        assert response.status == 503
        assert (await response.json())["error"] == "store_unavailable"

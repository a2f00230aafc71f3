"""Reading an upload's body (collector/request_body.py), through a collector served on loopback as
``gatewatch-collector serve`` runs it: every Content-Encoding, bad and truncated bodies, a real gzip bomb,
slow and vanishing clients, the cap on concurrent uploads, and aiohttp's own protocol errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gatewatch.collector.appkeys import REGISTRY_KEY, STORE_KEY
from gatewatch.collector.store import MeasurementFilter

URL = "/api/v1/measurements"
JSON = {"Content-Type": "application/json"}


def gzip_bomb(mebibytes: int) -> bytes:
    """A single-member gzip of ``mebibytes`` MiB of zeros (1024 → ~1 MB): one deflate block of 1 MiB of
    zeros, sync-flushed, repeated (its back-references only reach zeros), then the real trailer."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    repeat = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)
    return header + first + repeat * (mebibytes - 1) + compressor.flush() + trailer


def metric(app: Any, result: str) -> float:
    value = app[REGISTRY_KEY].get_sample_value("gatewatch_ingest_requests_total", {"result": result})
    return value or 0.0


def raw_request(body: bytes, headers: dict[str, str], *, length: int | None = None, path: str = URL) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: collector.test", f"Content-Length: {length or len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def assert_error_shape(document: Any, error: str) -> None:
    assert set(document) == {"error", "detail"} and document["error"] == error, document
    assert isinstance(document["detail"], str) and document["detail"]


@pytest.fixture
def batch(sign: Callable[..., dict[str, Any]]) -> Callable[[int], bytes]:
    return lambda n=2: json.dumps({"measurements": [sign() for _ in range(n)]}).encode()


def _deflate(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, tuple[str | None, Callable[[bytes], bytes]]] = {
    "identity": (None, lambda b: b),
    "identity-named": ("identity", lambda b: b),
    "gzip": ("gzip", gzip.compress),
    "gzip-upper": ("GZIP", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "gzip-two-members": ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),
    "deflate-zlib": ("deflate", lambda b: _deflate(b, zlib.MAX_WBITS)),
    "deflate-raw": ("deflate", lambda b: _deflate(b, -zlib.MAX_WBITS)),
}


@pytest.mark.parametrize("name", ENCODERS)
async def test_every_supported_encoding_is_decoded_and_stored(serve_collector, batch, name: str) -> None:
    served = await serve_collector()
    coding, encode = ENCODERS[name]
    headers = {**JSON, **({"Content-Encoding": coding} if coding else {})}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{served.port}{URL}", data=encode(batch(3)), headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            assert [item["status"] for item in (await r.json())["results"]] == ["accepted"] * 3
    rows, _ = await served.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert len(rows) == 3


def _undecodable(body: bytes) -> dict[str, tuple[str, bytes]]:
    packed = gzip.compress(body)
    deflated = _deflate(body, zlib.MAX_WBITS)
    return {
        "not-gzip": ("gzip", body),
        "gzip-truncated": ("gzip", packed[: len(packed) // 2]),
        "gzip-no-trailer": ("gzip", packed[:-8]),
        "gzip-then-garbage": ("gzip", packed + b"garbage!"),
        "gzip-empty": ("gzip", b""),
        "gzip-corrupt": ("gzip", packed[:20] + bytes(len(packed) - 20)),
        "not-deflate": ("deflate", b"\xff" * 64),
        "deflate-truncated": ("deflate", deflated[: len(deflated) // 2]),
        "deflate-then-data": ("deflate", deflated + b"more"),
    }


@pytest.mark.parametrize("case", list(_undecodable(b"{}")))
async def test_a_body_not_in_its_encoding_is_a_400_with_a_reason(serve_collector, batch, case: str) -> None:
    served = await serve_collector()
    coding, body = _undecodable(batch(2))[case]
    raw = await served.raw(raw_request(body, {**JSON, "Content-Encoding": coding, "Connection": "close"}))
    status, _, document = parse_response(raw)
    assert status == 400
    assert_error_shape(document, "undecodable_body")
    assert metric(served.app, "bad_request") == 1
    rows, _ = await served.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    assert rows == []


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "gzip, identity, deflate", "foo"])
async def test_an_unsupported_encoding_is_a_415_naming_the_supported_ones(
    serve_collector, batch, coding
) -> None:
    served = await serve_collector()
    raw = await served.raw(raw_request(batch(1), {**JSON, "Content-Encoding": coding, "Connection": "close"}))
    status, headers, document = parse_response(raw)
    assert status == 415
    assert_error_shape(document, "unsupported_content_encoding")
    assert headers["Accept-Encoding"] == "gzip, x-gzip, deflate"
    assert metric(served.app, "unsupported_media_type") == 1


async def test_other_endpoints_refuse_a_compressed_body(serve_collector) -> None:
    served = await serve_collector()
    body = gzip.compress(b'{"input": "http://x.lab/"}')
    raw = await served.raw(raw_request(body, {**JSON, "Content-Encoding": "gzip", "Connection": "close"},
                                       path="/api/v1/control"))  # fmt: skip
    status, _, document = parse_response(raw)
    assert status == 415
    assert_error_shape(document, "unsupported_content_encoding")


async def test_a_gzip_bomb_is_refused_at_the_limit_while_healthz_answers(serve_collector) -> None:
    """1 MB that inflates to 1 GiB: 413, and /healthz answers all along (the collector inflates at most its
    body limit, in small steps; the rest of the bomb is read raw and dropped)."""
    served = await serve_collector(max_body_bytes=8 * 1024 * 1024)
    bomb = gzip_bomb(1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(raw_request(b"", {**JSON, "Content-Encoding": "gzip"}, length=len(bomb)))

    async def send() -> None:
        try:
            for start in range(0, len(bomb), 16 * 1024):
                writer.write(bomb[start : start + 16 * 1024])
                await writer.drain()
        except ConnectionError:
            pass  # the collector answered and closed: the rest is not wanted

    sender = asyncio.create_task(send())
    answered_during_upload = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if sender.done():
                break
            async with asyncio.timeout(10), session.get(f"http://127.0.0.1:{served.port}/healthz") as r:
                assert r.status == 200
                answered_during_upload += 1
            await asyncio.sleep(0.005)
    raw = await asyncio.wait_for(reader.read(), 15)
    await asyncio.wait_for(sender, 15)
    writer.close()
    status, _, document = parse_response(raw)
    assert status == 413
    assert_error_shape(document, "body_too_large")
    assert answered_during_upload >= 1
    assert metric(served.app, "too_large") == 1


async def test_a_client_sending_half_a_body_is_cut_off(serve_collector) -> None:
    served = await serve_collector(body_timeout_seconds=0.5)
    raw = await served.raw(raw_request(b'{"measurements": [', JSON, length=10_000), read_timeout=20)
    status, headers, document = parse_response(raw)  # answered, then closed: reader.read() returned
    assert status == 408
    assert headers.get("Connection") == "close"
    assert_error_shape(document, "body_timeout")
    assert metric(served.app, "body_timeout") == 1


async def test_a_client_that_never_finishes_its_head_is_disconnected(serve_collector) -> None:
    served = await serve_collector(header_timeout_seconds=0.5)
    raw = await served.raw(b"POST /api/v1/measurements HTTP/1.1\r\nHost: collector.test\r\n", read_timeout=20)
    assert raw == b""  # closed without an answer: there is no request to answer yet


async def test_a_client_leaving_mid_body_is_one_log_line(serve_collector, caplog) -> None:
    served = await serve_collector()
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(raw_request(b'{"measurements": [' + b" " * 1000, JSON, length=100_000))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    for _ in range(100):
        if metric(served.app, "unreadable_body"):
            break
        await asyncio.sleep(0.05)
    assert metric(served.app, "unreadable_body") == 1
    # the aggregate's start-up rebuild may log meanwhile: only the upload path's records count here
    ours = [
        r
        for r in caplog.records
        if r.name.startswith("gatewatch") and not r.name.endswith("interference_api")
    ]
    assert [r.getMessage() for r in ours if r.levelno >= logging.INFO] == ["upload body unreadable"]
    assert not any(r.exc_info for r in caplog.records)


async def test_uploads_beyond_the_cap_are_asked_to_come_back(serve_collector, batch) -> None:
    served = await serve_collector(max_concurrent_uploads=1)
    # The first upload holds the only slot while its body trickles in.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    body = batch(1)
    writer.write(raw_request(body[:10], JSON, length=len(body)))
    await writer.drain()
    await asyncio.sleep(0.2)
    url = f"http://127.0.0.1:{served.port}{URL}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=batch(1), headers=JSON) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert_error_shape(await r.json(), "too_many_uploads")
        writer.write(body[10:])  # the first upload completes and frees its slot
        await writer.drain()
        status, _, document = parse_response(await asyncio.wait_for(reader.readuntil(b"]}"), 10))
        assert status == 200 and document["results"][0]["status"] == "accepted"
        writer.close()
        async with session.post(url, data=batch(1), headers=JSON) as r:
            assert r.status == 200
    assert metric(served.app, "too_many_uploads") == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",
        b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n",
        b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello sent to the plain port
    ],
)
async def test_requests_aiohttp_cannot_parse_get_the_json_error_shape(serve_collector, request_bytes) -> None:
    served = await serve_collector()
    status, headers, document = parse_response(await served.raw(request_bytes))
    assert 400 <= status < 500
    assert headers["Content-Type"].startswith("application/json")
    assert_error_shape(document, "malformed_http")
    assert metric(served.app, "malformed_http") == 1


async def test_a_stalled_body_to_any_endpoint_loses_its_connection(serve_collector) -> None:
    """The other endpoints read their small bodies without a deadline of their own: the server's backstop
    closes the connection shortly after body_timeout_seconds."""
    served = await serve_collector(body_timeout_seconds=0.5)
    raw = await served.raw(
        raw_request(b'{"input": ', JSON, length=500, path="/api/v1/control"), read_timeout=20
    )
    assert b" 200 " not in raw.split(b"\r\n", 1)[0]  # never answered as if the body had come

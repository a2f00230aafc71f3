"""Structured logs without addresses: the formatter masks them, the access log never has them."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gatewatch.collector.logging import (
    ACCESS_LOGGER_NAME,
    AccessLogger,
    JSONLineFormatter,
    redact_addresses,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 127.77.0.99 now", "from [address] now"),
        ("peer=(127.77.0.99, 5555)", "peer=([address], 5555)"),
        ("v6 2001:db8::7 and ::1 and fe80::1%eth0", "v6 [address] and [address] and [address]"),
        ("mapped ::ffff:127.77.0.99", "mapped ::ffff:[address]"),
        ("request from 203.0.113.5.", "request from [address]."),
        ("from 203.0.113.5. Then 198.51.100.7.", "from [address]. Then [address]."),
        ("peer 203.0.113.5:4433 closed", "peer [address]:4433 closed"),
        ("peer 2001:db8:0:0:0:0:0:7:8080 closed", "peer [address]:8080 closed"),
        ("peer 2001:db8:1:2:3:4:5:6:44321.", "peer [address]:44321."),
        ("peer [2001:db8::7]:443 and 2001:db8::7.", "peer [[address]]:443 and [address]."),
        ("fe80:0:0:0:0:0:0:1%eth0:53 up", "[address] up"),  # the port goes too: masking errs wide
        ("name 1.2.3.4.example and 1.2.3.4.5", "name 1.2.3.4.example and 1.2.3.4.5"),
        ("at 12:30:45 version 1.2.3 ratio 0.5", "at 12:30:45 version 1.2.3 ratio 0.5"),
        ("not an address 999.1.1.1", "not an address 999.1.1.1"),
        ("2026-03-01T12:00:00.123+00:00", "2026-03-01T12:00:00.123+00:00"),
        ("sha 5943e759962dbd2e", "sha 5943e759962dbd2e"),
    ],
)
def test_redact_addresses(text: str, expected: str) -> None:
    assert redact_addresses(text) == expected


def test_formatter_writes_one_json_object_per_line_with_extras() -> None:
    record = logging.LogRecord("gw.test", logging.WARNING, __file__, 1, "hello %s", ("127.0.0.9",), None)
    record.path = "/x"
    record.status = 404
    line = JSONLineFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "hello [address]"
    assert (entry["level"], entry["logger"], entry["path"], entry["status"]) == (
        "warning",
        "gw.test",
        "/x",
        404,
    )
    assert entry["ts"].endswith("+00:00")


def test_formatter_masks_tracebacks_too() -> None:
    try:
        raise ConnectionError("reset by 127.77.0.99")
    except ConnectionError:
        import sys

        record = logging.LogRecord("gw", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JSONLineFormatter().format(record)
    assert "127.77.0.99" not in line and "ConnectionError" in json.loads(line)["exc"]


async def test_access_log_has_method_path_status_duration_and_no_client(aiohttp_client) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONLineFormatter())
    logger = logging.getLogger(ACCESS_LOGGER_NAME + ".test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", hello)
    server = TestServer(app)  # started here: TestServer drops runner options given to its constructor
    await server.start_server(access_log_class=AccessLogger, access_log=logger)
    client = await aiohttp_client(server)
    response = await client.get("/hello?who=127.77.0.99&secret=1", headers={"X-Forwarded-For": "127.77.0.98"})
    assert response.status == 200
    await response.read()
    await client.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    (entry,) = lines
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/hello", 200)
    assert entry["duration_ms"] >= 0
    assert "127.0.0.1" not in stream.getvalue() and "127.77" not in stream.getvalue()
    assert "secret" not in stream.getvalue()

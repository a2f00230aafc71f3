"""The application's own endpoints and error handling, against both stores."""

from __future__ import annotations

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import REGISTRY_KEY, STORE_KEY
from gatewatch.collector.settings import Settings


@pytest.fixture
async def client(aiohttp_client, store_url: str):
    return await aiohttp_client(create_app(Settings(db=store_url, accept_identified=True)))


async def test_healthz(client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_follows_the_store(client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "ready"
    await client.app[STORE_KEY].close()
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "unavailable"
    response = await client.get("/healthz")  # the process is still up
    assert response.status == 200


async def test_metrics_are_served_from_the_apps_registry(client) -> None:
    await client.get("/readyz")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for name in (
        "gatewatch_ingest_requests_total",
        "gatewatch_ingest_items_total",
        "gatewatch_ingest_request_seconds_bucket",
        "gatewatch_store_seconds_bucket",
        "gatewatch_ingest_last_accepted_timestamp_seconds",
    ):
        assert name in text
    assert 'gatewatch_store_seconds_count{operation="ping"} 1.0' in text
    assert (
        client.app[REGISTRY_KEY].get_sample_value(
            "gatewatch_ingest_items_total", {"result": "rejected", "reason": "bad_signature"}
        )
        == 0
    )  # pre-created at zero


async def test_errors_are_json(client) -> None:
    response = await client.get("/no/such/path")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await client.delete("/api/v1/measurements")  # GET lists them (research.py); DELETE is no verb
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"


async def test_a_bug_is_a_logged_500_without_the_client(aiohttp_client, tmp_path, caplog) -> None:
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'x.db'}"))

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    app.router.add_get("/broken", broken)  # as add_*_routes functions do
    client = await aiohttp_client(app)
    response = await client.get("/broken")
    assert response.status == 500
    assert await response.json() == {"error": "internal_error", "detail": "see the collector's log"}
    assert any(r.getMessage() == "unhandled error" and r.exc_info for r in caplog.records)
    # The test server keeps aiohttp's own access log ("aiohttp.access"), which `gatewatch-collector serve`
    # replaces (tests/collector/test_logging.py and the privacy tests check the real one); every record
    # of the collector's own is free of the client's address.
    ours = [r for r in caplog.records if r.name != "aiohttp.access"]
    assert ours and not any("127.0.0.1" in r.getMessage() for r in ours)


def test_apps_share_no_state(tmp_path) -> None:
    a = create_app(Settings(db=f"sqlite:///{tmp_path / 'a.db'}"))
    b = create_app(Settings(db=f"sqlite:///{tmp_path / 'b.db'}"), registry=CollectorRegistry())
    assert a[REGISTRY_KEY] is not b[REGISTRY_KEY]

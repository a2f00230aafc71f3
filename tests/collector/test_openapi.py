"""The OpenAPI document: committed copy current, valid OpenAPI 3.1, covering every route the app serves, and
describing what the endpoints really answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
from aiohttp import web

from gatewatch.analysis.attribution import InterferenceRow, NetworkState
from gatewatch.collector.app import create_app
from gatewatch.collector.openapi import OPENAPI_PATH, add_openapi_routes, build_openapi, render
from gatewatch.collector.research import EXPORT_PATH, add_research_routes
from gatewatch.collector.settings import Settings
from gatewatch.core.wire import InterferenceRow as WireInterferenceRow

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def wire(app: web.Application) -> web.Application:
    """create_app plus this module's routes, unless create_app already adds them."""
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    if EXPORT_PATH not in paths:
        add_research_routes(app)
    if OPENAPI_PATH not in paths:
        add_openapi_routes(app)
    return app


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    return wire(create_app(Settings(db=f"sqlite:///{tmp_path / 'gatewatch.db'}", accept_identified=True)))


@pytest.fixture
async def client(aiohttp_client, app: web.Application):
    return await aiohttp_client(app)


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    # HEAD is aiohttp's automatic companion of every GET, not an operation of its own.
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path) for path, item in document["paths"].items() for method in item if method in METHODS
    }


def schema_validator(document: dict[str, Any], name: str) -> Any:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        "$ref": f"#/components/schemas/{name}",
    }
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_document_is_current() -> None:
    regenerate = "python -m gatewatch.collector.openapi docs/openapi.json"
    assert COMMITTED.read_text(encoding="utf-8") == render(), f"out of date: run {regenerate}"


def test_the_document_is_valid_openapi_3_1() -> None:
    document = build_openapi()
    assert document["openapi"].startswith("3.1.")
    openapi_spec_validator.validate(document)


def test_every_route_the_app_serves_is_documented(app: web.Application) -> None:
    undocumented = served_operations(app) - documented_operations(build_openapi())
    assert not undocumented, f"document these in collector/openapi.py: {sorted(undocumented)}"


def test_every_documented_operation_is_served(app: web.Application) -> None:
    missing = documented_operations(build_openapi()) - served_operations(app)
    assert not missing, f"documented but not served by create_app: {sorted(missing)}"


def test_every_operation_has_an_id_and_json_errors() -> None:
    document = build_openapi()
    ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path not in ("/readyz",):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert len(ids) == len(set(ids))


async def test_the_app_serves_the_document(client) -> None:
    response = await client.get(OPENAPI_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == build_openapi()


async def test_documented_research_parameters_are_the_ones_accepted(client) -> None:
    document = build_openapi()
    for path in ("/api/v1/measurements", EXPORT_PATH):
        for parameter in document["paths"][path]["get"]["parameters"]:
            response = await client.get(path, params={parameter["name"]: "\x01bad"})
            body = await response.json() if response.content_type == "application/json" else {}
            assert body.get("error") != "unknown_parameter", (path, parameter["name"])
    response = await client.get("/api/v1/measurements", params={"undocumented": "1"})
    assert (await response.json())["error"] == "unknown_parameter"


async def test_answers_match_their_schemas(client, app: web.Application, sign) -> None:
    document = build_openapi()

    def check(name: str, instance: Any) -> None:
        errors = [e.message for e in schema_validator(document, name).iter_errors(instance)]
        assert not errors, (name, errors, instance)

    garbage = {"format": "gatewatch-envelope/1", "payload": "", "signature": "", "public_key": ""}
    response = await client.post("/api/v1/measurements", json={"measurements": [sign(), garbage]})
    check("IngestResponse", await response.json())
    response = await client.post(
        "/api/v1/measurements", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    check("ErrorBody", await response.json())

    response = await client.get("/api/v1/measurements")
    page = await response.json()
    assert len(page["results"]) == 1
    check("MeasurementPage", page)
    response = await client.get("/api/v1/measurements", params={"anomaly": "perhaps"})
    assert response.status == 400
    check("ErrorBody", await response.json())

    for path in ("/healthz", "/readyz"):
        check("Status", await (await client.get(path)).json())
    check("ErrorBody", await (await client.get("/no/such/path")).json())

    served = served_operations(app)
    if ("get", "/api/v1/geolocate") in served:
        check("Geolocation", await (await client.get("/api/v1/geolocate")).json())
    if ("get", "/api/v1/interference") in served:
        response = await client.get("/api/v1/interference", params={"scope": "all"})
        check("InterferenceResponse", await response.json())
        check("ErrorBody", await (await client.get("/api/v1/interference", params={"cc": "X"})).json())
    if ("get", "/api/v1/test-list") in served:
        check("ErrorBody", await (await client.get("/api/v1/test-list")).json())
    if ("post", "/api/v1/control") in served:
        response = await client.post("/api/v1/control", json={"url": "no such field"})
        assert response.status == 400
        check("ErrorBody", await response.json())


def test_an_interference_row_matches_its_schema() -> None:
    """Also the fields an empty aggregate never shows (networks, times)."""
    now = datetime(2026, 11, 23, 13, 40, tzinfo=UTC)
    row = InterferenceRow(
        cc="XL",
        domain="a.lab",
        scope="gateway",
        rule_id="scope.gateway.same_fingerprint",
        evidence="2 of 2 networks show the same fingerprint",
        technique="dns.injection",
        fingerprint_key="0123456789abcdef",
        networks_affected=2,
        networks_measured=2,
        first_seen=now,
        last_seen=now,
        example_measurement_uids=("0190f0e0-0000-7000-8000-000000000000",),
        networks=(
            NetworkState("AS64501", "affected", 3, now, "0123456789abcdef", "dns.injection", now),
            NetworkState("AS64502", "clean", 1, now),
        ),
    )
    served = WireInterferenceRow.model_validate(row, from_attributes=True).model_dump(mode="json")
    errors = [e.message for e in schema_validator(build_openapi(), "InterferenceRow").iter_errors(served)]
    assert not errors

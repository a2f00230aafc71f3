"""The OpenAPI 3.1 document of the collector's whole HTTP API, served at ``GET /openapi.json``.

Schemas of bodies that are pydantic models (the envelope, the control's request and answer, the verdict,
the measurement) are generated from those models, and the research endpoints' parameters from the table
the handlers parse with (collector/research.py), so the document follows the code. The remaining shapes
(batch results, geolocation, interference rows, errors) are written out here; a test validates real
responses against them.

Regenerate the committed copy after changing an endpoint or a model:
``python -m gatewatch.collector.openapi docs/openapi.json``. A test fails while it is out of date.
"""

from __future__ import annotations

import json
import typing
from importlib.metadata import version
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from gatewatch.analysis.attribution import NetworkCondition, Scope
from gatewatch.core.control import ControlObservations
from gatewatch.core.envelope import ENVELOPE_FORMAT, Envelope
from gatewatch.core.measurement import Measurement
from gatewatch.core.schema import write_or_print
from gatewatch.core.verdicts import Verdict
from gatewatch.core.wire import MAX_CONTROL_BATCH, ControlBatchRequest, ControlBatchResponse, ControlRequest

from .exports import EXPORT_FORMATS, MEDIA_TYPES
from .research import EXPORT_PARAMETERS, LIST_PARAMETERS, MAX_LIMIT, QueryParameter

__all__ = ["OPENAPI_PATH", "add_openapi_routes", "build_openapi", "main", "render"]

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"

_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-23T13:40:00Z"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_ASN = {"type": "string", "pattern": "^AS[0-9]{1,10}$", "examples": ["AS64501"]}
_CC = {"type": "string", "pattern": "^[A-Z]{2}$", "examples": ["XL"]}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _closed(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An object with exactly these properties, all present."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return {"description": description, **schema} if description else schema


def _model_schemas() -> dict[str, Any]:
    """Component schemas generated from the pydantic models, their nested models included."""
    _, definitions = models_json_schema(
        [
            (Envelope, "validation"),
            (ControlRequest, "validation"),
            (ControlObservations, "serialization"),
            (ControlBatchRequest, "validation"),
            (ControlBatchResponse, "serialization"),
            (Verdict, "serialization"),
            (Measurement, "serialization"),
        ],
        ref_template=_REF,
    )
    return definitions["$defs"]


def _written_schemas() -> dict[str, Any]:
    """Shapes that are not pydantic models: kept beside the handlers' code in review."""
    return {
        "Error": _closed(
            {"error": {"type": "string"}, "detail": {"type": "string"}},
            "Every error: a short machine-readable reason and a sentence for people.",
        ),
        "IngestRequest": _closed(
            {"measurements": {"type": "array", "items": _ref("Envelope")}},
            f"A batch of signed measurements. Each envelope's format is {ENVELOPE_FORMAT!r}; its payload "
            "is base64 of the Measurement's exact JSON bytes, its signature an Ed25519 signature over "
            "those bytes.",
        ),
        "IngestItemResult": _closed(
            {
                "index": {"type": "integer", "minimum": 0, "description": "Position in the batch."},
                "measurement_uid": {
                    **_NULLABLE_STRING,
                    "description": "Null when the item could not be read that far.",
                },
                "status": {"enum": ["accepted", "duplicate", "rejected"]},
                "reason": {
                    **_NULLABLE_STRING,
                    "description": "Why an item was rejected (e.g. bad_signature, invalid_measurement, "
                    "too_old); null otherwise.",
                },
            }
        ),
        "IngestResponse": _closed(
            {"results": {"type": "array", "items": _ref("IngestItemResult")}},
            "One result per item, in the batch's order. A duplicate (same measurement_uid) is already "
            "stored: retrying is safe.",
        ),
        "Geolocation": _closed(
            {
                "probe_asn": {**_ASN, "description": "AS0 when unknown."},
                "probe_cc": {**_CC, "description": "ZZ when unknown."},
                "probe_network_name": {"type": "string"},
                "probe_ip": {
                    "type": "string",
                    "description": "The address the collector saw, echoed so that the agent can remove it "
                    "from what it records. It is not logged or stored.",
                },
            }
        ),
        "MeasurementRow": _closed(
            {
                "measurement_uid": {"type": "string"},
                "measurement_start_time": _TIME,
                "probe_cc": _CC,
                "probe_asn": _ASN,
                "test_name": {"type": "string"},
                "input": {"type": "string"},
                "domain": {"type": "string"},
                "blocking": {
                    "enum": [False, "dns", "tcp_ip", "http-failure", "http-diff", None],
                    "description": "The server's verdict, as OONI web_connectivity spells it.",
                },
                "anomaly": {"type": "boolean"},
                "technique": _NULLABLE_STRING,
                "fingerprint_key": _NULLABLE_STRING,
                "verdict": _ref("Verdict"),
                "received_at": _TIME,
                "flags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "e.g. asn_mismatch: the claimed network disagreed with the upload's.",
                },
            },
            "A stored measurement and the verdict the server derived for it (never the agent's).",
        ),
        "MeasurementPage": _closed(
            {
                "results": {"type": "array", "items": _ref("MeasurementRow"), "maxItems": MAX_LIMIT},
                "next_cursor": {
                    **_NULLABLE_STRING,
                    "description": "Pass as cursor, with the same filters, for the next page; null at the "
                    "end.",
                },
            },
            "Rows ordered by measurement_start_time, then measurement_uid.",
        ),
        "InterferenceNetwork": _closed(
            {
                "asn": _ASN,
                "condition": {"enum": list(typing.get_args(NetworkCondition))},
                "measurements": {"type": "integer", "minimum": 0},
                "last_measured": _NULLABLE_TIME,
                "fingerprint_key": _NULLABLE_STRING,
                "technique": _NULLABLE_STRING,
            }
        ),
        "InterferenceRow": _closed(
            {
                "cc": _CC,
                "domain": {"type": "string"},
                "scope": {"enum": list(typing.get_args(Scope))},
                "rule_id": {"type": "string", "description": "The attribution rule that decided."},
                "evidence": {"type": "string"},
                "technique": _NULLABLE_STRING,
                "fingerprint_key": _NULLABLE_STRING,
                "networks_affected": {"type": "integer", "minimum": 0},
                "networks_measured": {"type": "integer", "minimum": 0},
                "first_seen": _NULLABLE_TIME,
                "last_seen": _NULLABLE_TIME,
                "example_measurement_uids": {"type": "array", "items": {"type": "string"}},
                "networks": {"type": "array", "items": _ref("InterferenceNetwork")},
                "packet_evidence": {"type": ["object", "null"]},
            },
            "Whether interference with a domain in a country is gateway-level (one chokepoint for every "
            "network) or confined to some networks, and on what evidence.",
        ),
        "InterferenceResponse": _closed({"results": {"type": "array", "items": _ref("InterferenceRow")}}),
        "Status": {
            "type": "object",
            "properties": {"status": {"enum": ["ok", "ready", "unavailable"]}, "detail": {"type": "string"}},
            "required": ["status"],
            "additionalProperties": False,
        },
    }


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


_STORE_DOWN = _error("The store is unreachable; try again later.", _RETRY_AFTER)
_BAD_QUERY = _error("A parameter is unknown, repeated, empty or has a bad value (named in detail).")


def _parameters(parameters: tuple[QueryParameter, ...]) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
        for p in parameters
    ]


def _export_content() -> dict[str, Any]:
    schemas = {
        "jsonl": {
            "type": "string",
            "description": "One measurement per line (the Measurement schema with OONI's time format) "
            "plus the server's verdict under analysis.",
        },
        "csv": {"type": "string", "description": "A header, then one summary row per measurement."},
        "parquet": {"type": "string", "contentMediaType": MEDIA_TYPES["parquet"]},
    }
    return {MEDIA_TYPES[fmt].split(";")[0]: {"schema": schemas[fmt]} for fmt in EXPORT_FORMATS}


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/measurements": {
            "post": {
                "operationId": "submitMeasurements",
                "summary": "Upload a batch of signed measurements",
                "description": "Each item is verified, validated, re-judged by the server and stored "
                "durably before it is acknowledged; each gets its own result.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("IngestRequest")}},
                },
                "responses": {
                    "200": _json(_ref("IngestResponse"), "Per-item results."),
                    "400": _error(
                        "The body is not a batch (invalid_json, invalid_request, batch_too_large)."
                    ),
                    "413": _error("The body is larger than the collector accepts."),
                    "415": _error("The body is not application/json."),
                    "429": _error("A key that signed the batch is over its rate.", _RETRY_AFTER),
                    "503": _STORE_DOWN,
                },
            },
            "get": {
                "operationId": "listMeasurements",
                "summary": "A page of stored measurements with the server's verdicts",
                "parameters": _parameters(LIST_PARAMETERS),
                "responses": {
                    "200": _json(_ref("MeasurementPage"), "One page."),
                    "400": _error(
                        "A bad parameter, or a cursor that was altered or belongs to other filters."
                    ),
                    "503": _STORE_DOWN,
                },
            },
        },
        "/api/v1/measurements/export": {
            "get": {
                "operationId": "exportMeasurements",
                "summary": "Every matching measurement, streamed",
                "description": "A chunked download in constant server memory. A download that ends without "
                "the final chunk is incomplete.",
                "parameters": _parameters(EXPORT_PARAMETERS),
                "responses": {
                    "200": {
                        "description": "The selection, in measurement_start_time order.",
                        "headers": {
                            "Content-Disposition": {
                                "description": "attachment, with a file name for the format.",
                                "schema": {"type": "string"},
                            }
                        },
                        "content": _export_content(),
                    },
                    "400": _BAD_QUERY,
                    "503": _STORE_DOWN,
                },
            }
        },
        "/api/v1/geolocate": {
            "get": {
                "operationId": "geolocate",
                "summary": "The caller's network, from the operator's IP-to-ASN and country databases",
                "responses": {"200": _json(_ref("Geolocation"), "Where the caller appears to be.")},
            }
        },
        "/api/v1/control": {
            "post": {
                "operationId": "control",
                "summary": "Measure a URL from the collector's own, uncensored vantage point",
                "description": "Destinations in private, loopback, link-local, multicast and reserved "
                "ranges are never contacted unless the operator allowed them. Answers are cached briefly.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ControlRequest")}},
                },
                "responses": {
                    "200": _json(_ref("ControlObservations"), "What the URL looks like from here."),
                    "400": _error("The body is not a ControlRequest, or its input is not a usable URL."),
                    "413": _error("The body is too large."),
                    "429": _error("The collector's budget of control measurements is spent.", _RETRY_AFTER),
                    "504": _error("The control measurement took too long."),
                },
            }
        },
        "/api/v1/controls": {
            "post": {
                "operationId": "controls",
                "summary": f"Up to {MAX_CONTROL_BATCH} controls in one request, answered in order",
                "description": "Each request is handled as POST /api/v1/control would handle it alone; an "
                "item that could not be measured carries that endpoint's error code (invalid_input, "
                "rate_limited with retry_after, control_timeout) instead of observations.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ControlBatchRequest")}},
                },
                "responses": {
                    "200": _json(_ref("ControlBatchResponse"), "One item per request, in the order asked."),
                    "400": _error("The body is not a ControlBatchRequest (1 to 32 ControlRequests)."),
                    "413": _error("The body is too large."),
                },
            }
        },
        "/api/v1/test-list": {
            "get": {
                "operationId": "testList",
                "summary": "The operator's test list for a country (Citizen Lab CSV)",
                "parameters": [
                    {
                        "name": "cc",
                        "in": "query",
                        "required": True,
                        "description": "Country code.",
                        "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Citizen Lab test-list CSV (the country's list, then the global one).",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "400": _error("No or bad cc (invalid_cc)."),
                    "404": _error("No list for this country and no global list."),
                },
            }
        },
        "/api/v1/interference": {
            "get": {
                "operationId": "interference",
                "summary": "Current attribution of interference: gateway-level or confined to some networks",
                "parameters": [
                    {
                        "name": "cc",
                        "in": "query",
                        "required": False,
                        "description": "Only this country.",
                        "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                    },
                    {
                        "name": "scope",
                        "in": "query",
                        "required": False,
                        "description": "Scopes to list, repeated or comma-separated (default gateway,isp: "
                        "the rows kept current; the others are computed on request; all: every scope).",
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": {"enum": [*typing.get_args(Scope), "all"]}},
                    },
                ],
                "responses": {
                    "200": _json(_ref("InterferenceResponse"), "One row per (country, domain) and scope."),
                    "400": _error("A bad cc or scope."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (ingest health, interference)",
                "responses": {
                    "200": {
                        "description": "Prometheus' text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is up",
                "responses": {"200": _json(_ref("Status"), "Always ok while the process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store is reachable",
                "responses": {
                    "200": _json(_ref("Status"), "Ready."),
                    "503": _json(_ref("Status"), "The store is unreachable."),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
    }


def build_openapi() -> dict[str, Any]:
    """The document, as a JSON-ready dictionary."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gatewatch collector",
            "version": version("gatewatch"),
            "description": "Receives signed, anonymised reachability measurements from volunteers' agents, "
            "re-derives their verdicts, and serves them to researchers. No response carries a volunteer's "
            "address or key.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": _paths(),
        "components": {"schemas": {**_model_schemas(), **_written_schemas()}},
    }


def render() -> str:
    return json.dumps(build_openapi(), indent=2, sort_keys=True) + "\n"


def add_openapi_routes(app: web.Application) -> None:
    body = render().encode()  # once per application: the document does not change while it runs

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, openapi)


def main(argv: list[str] | None = None) -> int:
    return write_or_print(render(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""The OpenAPI 3.1 document of the collector's whole HTTP API, served at ``GET /openapi.json``.

Every body's schema is generated from the wire models (:mod:`gatewatch.core.wire`) and the models they
hold, and the research endpoints' parameters from the table the handlers parse with (collector/research.py),
so the document follows the code. Written here: what pydantic cannot say (paths, status codes, media types,
headers). A test validates real responses against the document.

Regenerate the committed copy after changing an endpoint or a model:
``python -m gatewatch.collector.openapi docs/openapi.json``. A test fails while it is out of date.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gatewatch.core.control import ControlObservations
from gatewatch.core.envelope import Envelope
from gatewatch.core.measurement import Measurement
from gatewatch.core.schema import write_or_print
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import INTERFERENCE_UNITS, SCOPES
from gatewatch.core.wire import (
    ConfirmationList,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlKeys,
    ControlRequest,
    ErrorBody,
    Geolocation,
    IngestRequest,
    IngestResponse,
    InterferenceResponse,
    IssuerKeysResponse,
    MeasurementPage,
    Sighting,
    SightingAnswer,
    Status,
    TokenRequest,
    TokenRequestBody,
    TokenResponse,
)

from .exports import EXPORT_FORMATS, MEDIA_TYPES
from .openapi_agent_paths import control_paths
from .openapi_pieces import (
    BAD_QUERY,
    CC_PARAMETER,
    REF,
    RETRY_AFTER,
    STORE_DOWN,
    error,
    json_answer,
    query_parameters,
    ref,
)
from .research import EXPORT_PARAMETERS, LIST_PARAMETERS

__all__ = ["OPENAPI_PATH", "add_openapi_routes", "build_openapi", "main", "render"]

OPENAPI_PATH = "/openapi.json"
# Requests are described as the collector reads them, answers as it writes them.
_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (IngestRequest, "validation"),
    (Envelope, "validation"),
    (TokenRequest, "validation"),
    (TokenRequestBody, "validation"),
    (IssuerKeysResponse, "serialization"),
    (TokenResponse, "serialization"),
    (ControlRequest, "validation"),
    (ControlBatchRequest, "validation"),
    (ErrorBody, "serialization"),
    (Status, "serialization"),
    (IngestResponse, "serialization"),
    (Geolocation, "serialization"),
    (ControlObservations, "serialization"),
    (ControlBatchResponse, "serialization"),
    (ControlKeys, "serialization"),
    (ConfirmationList, "serialization"),
    (Sighting, "validation"),
    (SightingAnswer, "serialization"),
    (MeasurementPage, "serialization"),
    (InterferenceResponse, "serialization"),
    (Verdict, "serialization"),
    (Measurement, "serialization"),
)


def _model_schemas() -> dict[str, Any]:
    """Component schemas generated from the wire models, the models they hold included."""
    _, definitions = models_json_schema(_MODELS, ref_template=REF)
    return definitions["$defs"]


def _export_content() -> dict[str, Any]:
    schemas = {
        "jsonl": {
            "type": "string",
            "description": "One measurement per line (the Measurement schema with OONI's time format) "
            "plus the server's verdict under analysis.",
        },
        "csv": {"type": "string", "description": "A header, then one summary row per measurement."},
        "parquet": {"type": "string", "contentMediaType": MEDIA_TYPES["parquet"]},
        "ooni": {
            "type": "string",
            "description": "format=ooni: one OONI Web Connectivity measurement per line (OONI's data "
            "formats), gatewatch's verdict and evidence under test_keys.gatewatch.",
        },
    }
    content: dict[str, Any] = {}
    for fmt in EXPORT_FORMATS:  # jsonl and ooni share a media type: one schema, both descriptions
        media_type = MEDIA_TYPES[fmt].split(";")[0]
        if media_type in content:
            schema = content[media_type]["schema"]
            schema["description"] = f"{schema['description']} Or, {schemas[fmt]['description']}"
        else:
            content[media_type] = {"schema": dict(schemas[fmt])}
    return content


def _ingest_and_listing() -> dict[str, Any]:
    """POST and GET /api/v1/measurements: one path, two operations."""
    return {
        "/api/v1/measurements": {
            "post": {
                "operationId": "submitMeasurements",
                "summary": "Upload a batch of signed measurements",
                "description": "Each item is verified, validated, re-judged by the server and stored "
                "durably before it is acknowledged; each gets its own result.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref(IngestRequest)}},
                },
                "responses": {
                    "200": json_answer(ref(IngestResponse), "Per-item results."),
                    "400": error("The body is not a batch (invalid_json, invalid_request, batch_too_large)."),
                    "413": error("The body is larger than the collector accepts."),
                    "403": error(
                        "The batch's token is refused (forged_token, wrong_epoch, unknown_key), or a batch "
                        "without a token where identified batches are not accepted (token_required, "
                        "unknown_identified_key). Nothing of the batch is stored."
                    ),
                    "409": error("The token was spent on another batch (double_spend)."),
                    "415": error("The body is not application/json."),
                    "429": error("A key that signed the batch is over its rate.", RETRY_AFTER),
                    "503": STORE_DOWN,
                },
            },
            "get": {
                "operationId": "listMeasurements",
                "summary": "A page of stored measurements with the server's verdicts",
                "parameters": query_parameters(LIST_PARAMETERS),
                "responses": {
                    "200": json_answer(ref(MeasurementPage), "One page."),
                    "400": error(
                        "A bad parameter, or a cursor that was altered or belongs to other filters."
                    ),
                    "503": STORE_DOWN,
                },
            },
        },
    }


def _export_and_geolocate() -> dict[str, Any]:
    """The research export, and the caller's own network."""
    return {
        "/api/v1/measurements/export": {
            "get": {
                "operationId": "exportMeasurements",
                "summary": "Every matching measurement, streamed",
                "description": "A chunked download in constant server memory. A download that ends without "
                "the final chunk is incomplete.",
                "parameters": query_parameters(EXPORT_PARAMETERS),
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
                    "400": BAD_QUERY,
                    "503": error(
                        "The store is unreachable (store_unavailable), or this collector already runs "
                        "max_concurrent_exports exports (too_many_exports): try again later.",
                        RETRY_AFTER,
                    ),
                },
            }
        },
        "/api/v1/geolocate": {
            "get": {
                "operationId": "geolocate",
                "summary": "The caller's network, from the operator's IP-to-ASN and country databases",
                "responses": {"200": json_answer(ref(Geolocation), "Where the caller appears to be.")},
            }
        },
    }


def _test_list_and_interference() -> dict[str, Any]:
    """What agents measure, and what the collector concluded."""
    return {
        "/api/v1/test-list": {
            "get": {
                "operationId": "testList",
                "summary": "The operator's test list for a country (Citizen Lab CSV)",
                "parameters": [CC_PARAMETER],
                "responses": {
                    "200": {
                        "description": "Citizen Lab test-list CSV (the country's list, then the global one).",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "400": error("No or bad cc (invalid_cc)."),
                    "404": error("No list for this country and no global list."),
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
                        "schema": {"type": "array", "items": {"enum": [*SCOPES, "all"]}},
                    },
                    {
                        "name": "per",
                        "in": "query",
                        "required": False,
                        "description": "domain (default): one row per domain, rolled up from its URLs "
                        "(interfered with when any of them is); url: one row per input URL, the unit "
                        "attribution decides.",
                        "schema": {"enum": list(INTERFERENCE_UNITS), "default": INTERFERENCE_UNITS[0]},
                    },
                ],
                "responses": {
                    "200": json_answer(
                        ref(InterferenceResponse),
                        "One row per (country, domain) or (country, URL), and scope.",
                    ),
                    "400": error("A bad cc, scope or per."),
                },
            }
        },
    }


def _operations() -> dict[str, Any]:
    """For operators: metrics, health, and this document."""
    return {
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
                "responses": {"200": json_answer(ref(Status), "Always ok while the process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store is reachable",
                "responses": {
                    "200": json_answer(ref(Status), "Ready."),
                    "503": json_answer(ref(Status), "The store is unreachable."),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": json_answer({"type": "object"}, "The OpenAPI document.")},
            }
        },
    }


def _tokens() -> dict[str, Any]:
    """The unlinkable uploads' issuer (issue 12)."""
    return {
        "/api/v1/issuer-keys": {
            "get": {
                "operationId": "issuerKeys",
                "summary": "Every token issuer key ever published, per weekly epoch",
                "responses": {"200": json_answer(ref(IssuerKeysResponse), "The same answer for everyone.")},
            }
        },
        "/api/v1/tokens": {
            "post": {
                "operationId": "issueTokens",
                "summary": "Blind-sign tokens for an agent that signs the request with its long-term key",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref(TokenRequest)}},
                },
                "responses": {
                    "200": json_answer(ref(TokenResponse), "One blind signature per blinded message."),
                    "400": error("Unreadable, badly signed or stale (bad_token_request, wrong_epoch)."),
                    "403": error("The enrolment policy's invite code or proof of work is missing."),
                    "409": error("The request's nonce was seen before (replayed_request)."),
                    "429": error("The key's tokens for this epoch are used up.", RETRY_AFTER),
                },
            }
        },
    }


def _paths() -> dict[str, Any]:
    return {
        **_ingest_and_listing(),
        **_tokens(),
        **_export_and_geolocate(),
        **control_paths(),
        **_test_list_and_interference(),
        **_operations(),
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
        "components": {"schemas": _model_schemas()},
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

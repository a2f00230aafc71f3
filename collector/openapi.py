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
    MAX_CONTROL_BATCH,
    MAX_SIGHTING_BODY,
    MAX_SIGHTING_URLS,
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
from .research import EXPORT_PARAMETERS, LIST_PARAMETERS, QueryParameter

__all__ = ["OPENAPI_PATH", "add_openapi_routes", "build_openapi", "main", "render"]

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}
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


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _model_schemas() -> dict[str, Any]:
    """Component schemas generated from the wire models, the models they hold included."""
    _, definitions = models_json_schema(_MODELS, ref_template=_REF)
    return definitions["$defs"]


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref(ErrorBody), description, headers)


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
                    "content": {"application/json": {"schema": _ref(IngestRequest)}},
                },
                "responses": {
                    "200": _json(_ref(IngestResponse), "Per-item results."),
                    "400": _error(
                        "The body is not a batch (invalid_json, invalid_request, batch_too_large)."
                    ),
                    "413": _error("The body is larger than the collector accepts."),
                    "403": _error(
                        "The batch's token is refused (forged_token, wrong_epoch, unknown_key), or a batch "
                        "without a token where identified batches are not accepted (token_required, "
                        "unknown_identified_key). Nothing of the batch is stored."
                    ),
                    "409": _error("The token was spent on another batch (double_spend)."),
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
                    "200": _json(_ref(MeasurementPage), "One page."),
                    "400": _error(
                        "A bad parameter, or a cursor that was altered or belongs to other filters."
                    ),
                    "503": _STORE_DOWN,
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
                "responses": {"200": _json(_ref(Geolocation), "Where the caller appears to be.")},
            }
        },
    }


def _controls() -> dict[str, Any]:
    """The control endpoints: one URL, or a batch."""
    return {
        "/api/v1/control": {
            "post": {
                "operationId": "control",
                "summary": "Measure a URL from the collector's own, uncensored vantage point",
                "description": "Destinations in private, loopback, link-local, multicast and reserved "
                "ranges are never contacted unless the operator allowed them. Answers are cached briefly. "
                "The body is the control's JSON text exactly as the collector signed it; the header "
                "Gatewatch-Control-Signature (key_id=...; measured_at=...; signature=...) vouches for it "
                "(Ed25519, keys at GET /api/v1/control-keys).",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(ControlRequest)}},
                },
                "responses": {
                    "200": _json(_ref(ControlObservations), "What the URL looks like from here."),
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
                    "content": {"application/json": {"schema": _ref(ControlBatchRequest)}},
                },
                "responses": {
                    "200": _json(_ref(ControlBatchResponse), "One item per request, in the order asked."),
                    "400": _error("The body is not a ControlBatchRequest (1 to 32 ControlRequests)."),
                    "413": _error("The body is too large."),
                },
            }
        },
        "/api/v1/confirm": {
            "get": {
                "operationId": "confirm",
                "summary": "Test-list URLs that just showed an anomaly in the country: measure them now",
                "description": "Agents poll this about once a minute (with jitter, within their budget) "
                "and measure the listed URLs at once, so that a block seen in one network is confirmed "
                "(or not) by the others within minutes. Only URLs on the operator's test list, at most "
                "20, and nothing about who reported them.",
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
                    "200": _json(_ref(ConfirmationList), "The URLs to measure now (often none)."),
                    "400": _error("No or bad cc."),
                },
            },
            "post": {
                "operationId": "sighting",
                "summary": "A sighting: test-list URLs a pass just found anomalous, before its upload",
                "description": "Right after a scheduled pass that found anomalies, an agent names which "
                "test-list URLs looked anomalous in its country (nothing else: no measurement, key, token "
                "or network), so that the country's agents confirm them at once while the pass's own "
                "uploads keep their privacy delay. The body is padded with JSON whitespace to a fixed "
                f"size. Accepted URLs are listed by GET for 5 minutes, at most {MAX_SIGHTING_URLS} per "
                "country, after (and never instead of) the URLs listed because of judged anomalies. "
                "Nothing about the sender is kept.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(Sighting)}},
                },
                "responses": {
                    "200": _json(_ref(SightingAnswer), "The URLs now listed, and each refused one's reason."),
                    "400": _error("The body is not JSON (invalid_json), or could not be read."),
                    "413": _error(f"The body is larger than {MAX_SIGHTING_BODY} bytes."),
                    "422": _error(
                        "Not a Sighting (invalid_request), the withheld country (invalid_cc), or no URL "
                        "could be listed (nothing_listable: not on the country's test list, or malformed)."
                    ),
                    "429": _error("Too many sightings for this country just now.", _RETRY_AFTER),
                },
            },
        },
        "/api/v1/control-keys": {
            "get": {
                "operationId": "controlKeys",
                "summary": "The collector's control-signing keys (Ed25519, rotated) that ingest accepts",
                "responses": {"200": _json(_ref(ControlKeys), "Key ids and public keys, newest first.")},
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
                    "200": _json(
                        _ref(InterferenceResponse),
                        "One row per (country, domain) or (country, URL), and scope.",
                    ),
                    "400": _error("A bad cc, scope or per."),
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
                "responses": {"200": _json(_ref(Status), "Always ok while the process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store is reachable",
                "responses": {
                    "200": _json(_ref(Status), "Ready."),
                    "503": _json(_ref(Status), "The store is unreachable."),
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


def _tokens() -> dict[str, Any]:
    """The unlinkable uploads' issuer (issue 12)."""
    return {
        "/api/v1/issuer-keys": {
            "get": {
                "operationId": "issuerKeys",
                "summary": "Every token issuer key ever published, per weekly epoch",
                "responses": {"200": _json(_ref(IssuerKeysResponse), "The same answer for everyone.")},
            }
        },
        "/api/v1/tokens": {
            "post": {
                "operationId": "issueTokens",
                "summary": "Blind-sign tokens for an agent that signs the request with its long-term key",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(TokenRequest)}},
                },
                "responses": {
                    "200": _json(_ref(TokenResponse), "One blind signature per blinded message."),
                    "400": _error("Unreadable, badly signed or stale (bad_token_request, wrong_epoch)."),
                    "403": _error("The enrolment policy's invite code or proof of work is missing."),
                    "409": _error("The request's nonce was seen before (replayed_request)."),
                    "429": _error("The key's tokens for this epoch are used up.", _RETRY_AFTER),
                },
            }
        },
    }


def _paths() -> dict[str, Any]:
    return {
        **_ingest_and_listing(),
        **_tokens(),
        **_export_and_geolocate(),
        **_controls(),
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

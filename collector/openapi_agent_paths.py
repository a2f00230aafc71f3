"""The OpenAPI paths of the endpoints agents call while measuring: controls (one URL or a batch), the
country's confirmation list and sightings, and the control-signing keys (openapi.py assembles them)."""

from __future__ import annotations

from typing import Any

from gatewatch.core.control import ControlObservations
from gatewatch.core.wire import (
    MAX_CONTROL_BATCH,
    MAX_SIGHTING_BODY,
    MAX_SIGHTING_URLS,
    ConfirmationList,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlKeys,
    ControlRequest,
    Sighting,
    SightingAnswer,
)

from .openapi_pieces import CC_PARAMETER, RETRY_AFTER, error, json_answer, ref

__all__ = ["control_paths"]


def control_paths() -> dict[str, Any]:
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
                    "content": {"application/json": {"schema": ref(ControlRequest)}},
                },
                "responses": {
                    "200": json_answer(ref(ControlObservations), "What the URL looks like from here."),
                    "400": error("The body is not a ControlRequest, or its input is not a usable URL."),
                    "413": error("The body is too large."),
                    "429": error("The collector's budget of control measurements is spent.", RETRY_AFTER),
                    "504": error("The control measurement took too long."),
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
                    "content": {"application/json": {"schema": ref(ControlBatchRequest)}},
                },
                "responses": {
                    "200": json_answer(
                        ref(ControlBatchResponse), "One item per request, in the order asked."
                    ),
                    "400": error("The body is not a ControlBatchRequest (1 to 32 ControlRequests)."),
                    "413": error("The body is too large."),
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
                "parameters": [CC_PARAMETER],
                "responses": {
                    "200": json_answer(ref(ConfirmationList), "The URLs to measure now (often none)."),
                    "400": error("No or bad cc."),
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
                    "content": {"application/json": {"schema": ref(Sighting)}},
                },
                "responses": {
                    "200": json_answer(
                        ref(SightingAnswer), "The URLs now listed, and each refused one's reason."
                    ),
                    "400": error("The body is not JSON (invalid_json), or could not be read."),
                    "413": error(f"The body is larger than {MAX_SIGHTING_BODY} bytes."),
                    "422": error(
                        "Not a Sighting (invalid_request), the withheld country (invalid_cc), or no URL "
                        "could be listed (nothing_listable: not on the country's test list, or malformed)."
                    ),
                    "429": error("Too many sightings for this country just now.", RETRY_AFTER),
                },
            },
        },
        "/api/v1/control-keys": {
            "get": {
                "operationId": "controlKeys",
                "summary": "The collector's control-signing keys (Ed25519, rotated) that ingest accepts",
                "responses": {"200": json_answer(ref(ControlKeys), "Key ids and public keys, newest first.")},
            }
        },
    }

"""The agent's HTTP client for the collector: geolocate, control, test list (uploads: upload.py).

Every call turns network trouble into a failure string (from :mod:`gatewatch.core.failures`) instead
of an exception, because a blocked collector is an expected condition on the networks that matter. Every
answer is read with its model of the wire contract (:mod:`gatewatch.core.wire`); one that does not fit is
``bad_answer``, as an answer that is not JSON at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import ValidationError

from gatewatch.core.control import VOUCH_HEADER, ControlObservations, VouchedControl, vouch_from_header
from gatewatch.core.failures import classify
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.core.wire import (
    CONTROL_ERROR_STATUS,
    ConfirmationList,
    ControlBatchItem,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlRequest,
    Geolocation,
)

from .http_client import HttpClient, HttpClientError

__all__ = [
    "BAD_ANSWER",
    "TOLERATED_EXTRA",
    "ApiFailure",
    "api_url",
    "describe_failure",
    "fetch_test_list",
    "geolocate",
    "make_session",
    "read_geolocation",
    "request_control",
    "request_controls",
]


BAD_ANSWER: Final = "bad_answer"  # an answer that is not the contract's (not JSON, or not its model)
# Fields the agent does not know in an answer are ignored, as they were before the answers were typed: a
# collector that adds one must not cut off the agents already in the field (the control's answer, read
# strictly from the start, stays strict).
TOLERATED_EXTRA: Final = "ignore"


@dataclass(frozen=True)
class ApiFailure:
    """Why a collector call did not give an answer (short, fit for ``status``)."""

    failure: str
    collector: str = ""

    def __str__(self) -> str:
        return f"{self.collector}: {self.failure}" if self.collector else self.failure


def api_url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/api/v1/{path}"


def _host(base: str) -> str:
    return urlsplit(base).hostname or base


def describe_failure(exc: BaseException) -> str:
    """A failure string for an exception of the agent's HTTP client (or of the OS beneath it)."""
    if isinstance(exc, HttpClientError):
        return exc.failure
    return classify(exc)


def make_session(
    *, source_address: str | None = None, ca_file: str | None = None, limit: int = 8
) -> HttpClient:
    """A client for collector calls, at most ``limit`` at once. ``source_address`` binds it (labs put the
    agent inside an emulated network); ``ca_file`` trusts a lab's CA in addition to the system's roots, so
    the same flag works with a public collector. It keeps no cookies: nothing links one call to the next."""
    return HttpClient(source_address=source_address, ca_file=ca_file, max_concurrent=limit)


async def _json(
    session: HttpClient, method: str, url: str, body: Any = None
) -> tuple[Any, None] | tuple[None, str]:
    try:
        response = await session.request(method, url, json_body=body)
        if response.status != 200:
            return None, f"http_{response.status}"
        return response.json(), None
    except HttpClientError as exc:
        return None, exc.failure
    except ValueError:
        return None, BAD_ANSWER


# What agents accepted before the answer was typed, still accepted: an answer without ``probe_ip`` (read
# as no address: the pass then decides, see runner._Pass.locate) or with a null or empty network, country or
# network name (read as withheld).
_GEOLOCATION_FALLBACKS: Final = {
    "probe_asn": WITHHELD_ASN,
    "probe_cc": WITHHELD_CC,
    "probe_network_name": "",
    "probe_ip": "",
}


def read_geolocation(data: Any) -> Geolocation:
    """The collector's geolocation answer (parsed JSON). Raises ValueError when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    given = {key: value for key, value in data.items() if value is not None and value != ""}
    return Geolocation.model_validate(_GEOLOCATION_FALLBACKS | given, strict=True, extra=TOLERATED_EXTRA)


async def geolocate(session: HttpClient, bases: list[str]) -> Geolocation | ApiFailure:
    """Ask each collector in turn where we are; the first answer wins. An unknown address is ``""``."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        data, error = await _json(session, "GET", api_url(base, "geolocate"))
        if error is None:
            try:
                return read_geolocation(data)
            except ValueError:  # pydantic's ValidationError among them
                error = BAD_ANSWER
        failure = ApiFailure(error, _host(base))
    return failure


async def request_control(
    session: HttpClient, base: str, request: ControlRequest
) -> ControlObservations | VouchedControl | ApiFailure:
    """One control; vouched for (its body's text signed, the signature in a header) by a collector that
    signs its controls, else the bare observations."""
    try:
        response = await session.request(
            "POST", api_url(base, "control"), json_body=request.model_dump(mode="json")
        )
    except HttpClientError as exc:
        return ApiFailure(exc.failure, _host(base))
    if response.status != 200:
        return ApiFailure(f"http_{response.status}", _host(base))
    try:
        text = response.text()
        header = response.header(VOUCH_HEADER)
        if header is not None:
            vouch = vouch_from_header(header, request.input, text)
            vouch.observations()  # it must be a control, too
            return vouch
        return ControlObservations.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError among them
        return ApiFailure(BAD_ANSWER, _host(base))


async def request_controls(
    session: HttpClient, base: str, requests: list[ControlRequest]
) -> list[ControlObservations | VouchedControl | ApiFailure] | ApiFailure:
    """Several controls in one ``POST /api/v1/controls``, answered in the order asked; an ApiFailure for the
    whole batch when it got no usable answer (``http_404`` from a collector without the endpoint)."""
    body = ControlBatchRequest(requests=requests).model_dump(mode="json")
    data, error = await _json(session, "POST", api_url(base, "controls"), body)
    if error is not None:
        return ApiFailure(error, _host(base))
    try:
        answer = ControlBatchResponse.model_validate(data)
    except ValidationError:
        return ApiFailure(BAD_ANSWER, _host(base))
    if [item.input for item in answer.results] != [request.input for request in requests]:
        return ApiFailure(BAD_ANSWER, _host(base))  # not the answers to what was asked, in order
    return [_item_answer(item, base) for item in answer.results]


def _item_answer(item: ControlBatchItem, base: str) -> ControlObservations | VouchedControl | ApiFailure:
    if item.vouch is not None and item.vouch.input == item.input:
        try:
            item.vouch.observations()
            return item.vouch
        except ValidationError:
            return ApiFailure(BAD_ANSWER, _host(base))
    if item.control is not None:
        return item.control
    status = CONTROL_ERROR_STATUS.get(item.error or "")
    return ApiFailure(f"http_{status}" if status else BAD_ANSWER, _host(base))


async def fetch_confirmations(session: HttpClient, base: str, cc: str) -> list[str] | ApiFailure:
    """The URLs the collector asks this country's agents to measure now (``GET /api/v1/confirm``); only
    http(s) URLs are kept, at most 20."""
    data, error = await _json(session, "GET", api_url(base, f"confirm?cc={cc}"))
    if error is not None:
        return ApiFailure(error, _host(base))
    try:
        answer = ConfirmationList.model_validate(data, extra=TOLERATED_EXTRA)
    except ValidationError:
        return ApiFailure(BAD_ANSWER, _host(base))
    return [url for url in answer.urls if url.startswith(("http://", "https://"))][:20]


async def fetch_test_list(session: HttpClient, bases: list[str], cc: str) -> str | ApiFailure:
    """The operator's test list for country ``cc`` as CSV text, from the first collector that answers."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        try:
            response = await session.get(api_url(base, "test-list"), params={"cc": cc})
        except HttpClientError as exc:
            failure = ApiFailure(exc.failure, _host(base))
            continue
        if response.status == 200:
            return response.text()
        failure = ApiFailure(f"http_{response.status}", _host(base))
    return failure

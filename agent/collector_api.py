"""The agent's HTTP client for the collector: geolocate, control, test list (uploads: upload.py).

Every call turns network trouble into a failure string (from :mod:`gatewatch.core.failures`) instead
of an exception, because a blocked collector is an expected condition on the networks that matter. Every
answer is read with its model of the wire contract (:mod:`gatewatch.core.wire`); one that does not fit is
``bad_answer``, as an answer that is not JSON at all.

Collector addresses (:class:`~gatewatch.agent.addresses.CollectorAddress`, or plain URLs for a direct
connection) carry their route: a proxy, Tor, a CDN front. Calls given several try them in order, and each
attempt's outcome is recorded in the session's :class:`~gatewatch.agent.addresses.AttemptLog` for ``status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from gatewatch.core.control import VOUCH_HEADER, ControlObservations, VouchedControl, vouch_from_header
from gatewatch.core.failures import classify
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.core.wire import (
    CONTROL_ERROR_STATUS,
    MAX_CONFIRM_LIST,
    ConfirmationList,
    ControlBatchItem,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlRequest,
    Geolocation,
    Sighting,
    SightingAnswer,
)

from .addresses import AttemptLog, CollectorAddress, Fallbacks, as_address
from .http_client import DIRECT, HttpClient, HttpClientError, Response
from .proxy import Route
from .sightings import sighting_body

__all__ = [
    "BAD_ANSWER",
    "NO_DIRECT_ADDRESS",
    "Address",
    "TOLERATED_EXTRA",
    "ApiFailure",
    "CollectorSession",
    "Located",
    "api_url",
    "describe_failure",
    "fetch_confirmations",
    "fetch_test_list",
    "geolocate",
    "locate_via",
    "make_session",
    "report_sighting",
    "read_geolocation",
    "request_control",
    "request_controls",
    "route_for",
    "where_am_i",
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


Address = str | CollectorAddress


def api_url(base: Address, path: str) -> str:
    url = base.url if isinstance(base, CollectorAddress) else base
    return f"{url.rstrip('/')}/api/v1/{path}"


def _host(base: Address) -> str:
    return as_address(base).host


class CollectorSession(HttpClient):
    """The HTTP client of collector calls, with the log of its attempts by address (for ``status``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempts = AttemptLog()


def record_attempt(session: HttpClient, call: str, base: Address, failure: str | None) -> None:
    """Note one attempt's outcome (``None``: it answered) when the session keeps a log."""
    if isinstance(session, CollectorSession):
        session.attempts.record(call, as_address(base), route_for(session, base), failure)


def describe_failure(exc: BaseException) -> str:
    """A failure string for an exception of the agent's HTTP client (or of the OS beneath it)."""
    if isinstance(exc, HttpClientError):
        return exc.failure
    return classify(exc)


def make_session(
    *,
    source_address: str | None = None,
    ca_file: str | None = None,
    limit: int = 8,
    route: Route = DIRECT,
) -> CollectorSession:
    """A client for collector calls, at most ``limit`` at once. ``source_address`` binds it (labs put the
    agent inside an emulated network); ``ca_file`` trusts a lab's CA in addition to the system's roots, so
    the same flag works with a public collector; ``route`` is how calls to a plain URL go (each
    :class:`CollectorAddress` brings its own). It keeps no cookies: nothing links one call to the next."""
    return CollectorSession(source_address=source_address, ca_file=ca_file, max_concurrent=limit, route=route)


def route_for(session: HttpClient, base: Address) -> Route:
    """How to reach ``base``: its own route, or the session's for a plain URL or an address that names no
    proxy and no front (``proxy = "direct"`` names one: never through the session's proxy)."""
    if isinstance(base, CollectorAddress) and (base.proxy is not None or base.front is not None):
        return base.route
    return session.route


def _read_json(response: Response) -> Any:
    return response.json()


async def _json(
    session: HttpClient,
    method: str,
    base: Address,
    path: str,
    body: Any = None,
    read: Callable[[Response], Any] = _read_json,
) -> tuple[Any, None] | tuple[None, str]:
    """One call; its answer as ``read`` makes it (JSON by default), or a failure string. ``read`` raises
    ValueError (pydantic's ValidationError is one) for an answer that is not the contract's."""
    try:
        url = api_url(base, path)
        response = await session.request(method, url, json_body=body, route=route_for(session, base))
        if response.status != 200:
            return None, f"http_{response.status}"
        return read(response), None
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


@dataclass(frozen=True)
class Located:
    """A geolocation answer and the address that gave it: through a proxy, the collector saw the proxy's
    exit, so what it says (address, network, country) is the proxy's, not ours."""

    geolocation: Geolocation
    address: CollectorAddress


async def locate_via(session: HttpClient, bases: Sequence[Address]) -> Located | ApiFailure:
    """Ask each address in turn where we are; the first answer wins. An unknown address is ``""``."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        address = as_address(base)
        data, error = await _json(session, "GET", base, "geolocate")
        if error is None:
            try:
                found = read_geolocation(data)
            except ValueError:  # pydantic's ValidationError among them
                error = BAD_ANSWER
            else:
                record_attempt(session, "geolocate", address, None)
                return Located(found, address)
        record_attempt(session, "geolocate", address, error)
        failure = ApiFailure(error, _host(base))
    return failure


NO_DIRECT_ADDRESS: Final = (
    "every collector address goes through a proxy or Tor, where the collector sees the proxy's address, "
    "not this machine's: add a direct or fronted address (asked only where this machine is)"
)


async def where_am_i(session: HttpClient, bases: Sequence[Address]) -> Geolocation | ApiFailure:
    """Where this machine is, from the addresses that reach the collector without a proxy (direct or
    fronted), in their order. Through a proxy (Tor included) the collector sees the proxy's exit, whose
    address, network and country are not ours: scrubbing that address instead of ours would publish
    ours. With no such address, an :class:`ApiFailure` saying why."""
    unproxied = [base for base in bases if route_for(session, base).proxy is None]
    if not unproxied:
        return ApiFailure(NO_DIRECT_ADDRESS)
    return await geolocate(session, unproxied)


async def geolocate(session: HttpClient, bases: Sequence[Address]) -> Geolocation | ApiFailure:
    """:func:`locate_via`'s answer alone."""
    found = await locate_via(session, bases)
    return found if isinstance(found, ApiFailure) else found.geolocation


# Failures that the next address would answer the same way: a collector without the batch endpoint (the
# batcher then asks one URL at a time), or a request it found malformed.
_SAME_EVERYWHERE: Final = frozenset({"http_400", "http_404", "http_405"})


async def _in_turn(
    session: HttpClient,
    bases: Address | Fallbacks,
    method: str,
    path: str,
    body: Any,
    read: Callable[[Response], Any] = _read_json,
) -> tuple[Any, None, Address] | tuple[None, str, Address]:
    """``_json`` at each of ``bases`` in turn until one answers (a single address: just that one)."""
    if not isinstance(bases, Fallbacks):
        data, error = await _json(session, method, bases, path, body, read)
        return (data, None, bases) if error is None else (None, error, bases)
    error, address = "no collector configured", bases.addresses[0]
    for address in bases.in_turn():
        data, failed = await _json(session, method, address, path, body, read)
        if failed is None:
            bases.answered(address)
            return data, None, address
        record_attempt(session, "control", address, failed)
        error = failed
        if failed in _SAME_EVERYWHERE:
            break
    return None, error, address


async def request_control(
    session: HttpClient, base: Address | Fallbacks, request: ControlRequest
) -> ControlObservations | VouchedControl | ApiFailure:
    """One control; vouched for (its body's text signed, the signature in a header) by a collector that
    signs its controls, else the bare observations. Several addresses are tried in turn."""

    def read(response: Response) -> ControlObservations | VouchedControl:
        text = response.text()
        header = response.header(VOUCH_HEADER)
        if header is not None:
            vouch = vouch_from_header(header, request.input, text)
            vouch.observations()  # it must be a control, too
            return vouch
        return ControlObservations.model_validate_json(text)

    body = request.model_dump(mode="json")
    data, error, base = await _in_turn(session, base, "POST", "control", body, read)
    if error is not None:
        return ApiFailure(error, _host(base))
    return data  # type: ignore[no-any-return]


async def request_controls(
    session: HttpClient, base: Address | Fallbacks, requests: list[ControlRequest]
) -> list[ControlObservations | VouchedControl | ApiFailure] | ApiFailure:
    """Several controls in one ``POST /api/v1/controls``, answered in the order asked; an ApiFailure for the
    whole batch when it got no usable answer (``http_404`` from a collector without the endpoint)."""
    body = ControlBatchRequest(requests=requests).model_dump(mode="json")
    data, error, base = await _in_turn(session, base, "POST", "controls", body)
    if error is not None:
        return ApiFailure(error, _host(base))
    try:
        answer = ControlBatchResponse.model_validate(data)
    except ValidationError:
        return ApiFailure(BAD_ANSWER, _host(base))
    if [item.input for item in answer.results] != [request.input for request in requests]:
        return ApiFailure(BAD_ANSWER, _host(base))  # not the answers to what was asked, in order
    return [_item_answer(item, base) for item in answer.results]


def _item_answer(item: ControlBatchItem, base: Address) -> ControlObservations | VouchedControl | ApiFailure:
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


async def fetch_confirmations(session: HttpClient, base: Address, cc: str) -> list[str] | ApiFailure:
    """The URLs the collector asks this country's agents to measure now (``GET /api/v1/confirm``); only
    http(s) URLs are kept, at most 20."""
    data, error = await _json(session, "GET", base, f"confirm?cc={cc}")
    if error is not None:
        return ApiFailure(error, _host(base))
    try:
        answer = ConfirmationList.model_validate(data, extra=TOLERATED_EXTRA)
    except ValidationError:
        return ApiFailure(BAD_ANSWER, _host(base))
    return [url for url in answer.urls if url.startswith(("http://", "https://"))][:MAX_CONFIRM_LIST]


async def report_sighting(
    session: HttpClient, bases: Sequence[Address], sighting: Sighting
) -> SightingAnswer | ApiFailure:
    """Tell the collector which test-list URLs a pass just found anomalous (``POST /api/v1/confirm``), by
    each address's route in turn until one answers; the body padded to a fixed size (agent/sightings.py).
    A 422 (none of them listable) is an answer too: a failure string, not worth the next address."""
    failure = ApiFailure("no collector configured")
    body = sighting_body(sighting)
    for base in bases:
        try:
            response = await session.request(
                "POST",
                api_url(base, "confirm"),
                body=body,
                content_type="application/json",
                route=route_for(session, base),
            )
        except HttpClientError as exc:
            failure = ApiFailure(exc.failure, _host(base))
            record_attempt(session, "sighting", base, exc.failure)
            continue
        record_attempt(session, "sighting", base, None)
        if response.status != 200:
            failure = ApiFailure(f"http_{response.status}", _host(base))
            if response.status in (400, 413, 422):
                break  # what the next address would answer the same way
            continue
        try:
            return SightingAnswer.model_validate(response.json(), extra=TOLERATED_EXTRA)
        except ValueError:
            return ApiFailure(BAD_ANSWER, _host(base))
    return failure


async def fetch_test_list(session: HttpClient, bases: Sequence[Address], cc: str) -> str | ApiFailure:
    """The operator's test list for country ``cc`` as CSV text, from the first address that answers."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        address = as_address(base)
        try:
            url, route = api_url(base, "test-list"), route_for(session, base)
            response = await session.request("GET", url, params={"cc": cc}, route=route)
        except HttpClientError as exc:
            error = exc.failure
        else:
            if response.status == 200:
                record_attempt(session, "test-list", address, None)
                return response.text()
            error = f"http_{response.status}"
        record_attempt(session, "test-list", address, error)
        failure = ApiFailure(error, _host(base))
    return failure

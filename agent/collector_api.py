"""The agent's HTTP client for the collector: geolocate, control, test list (uploads: upload.py).

Every call turns network trouble into a failure string (from :mod:`gatewatch.probes.failures`) instead
of an exception, because a blocked collector is an expected condition on the networks that matter.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import ValidationError

from gatewatch.probes.control import ControlObservations, ControlRequest
from gatewatch.probes.failures import classify

__all__ = [
    "ApiFailure",
    "Geolocation",
    "api_url",
    "describe_failure",
    "fetch_test_list",
    "geolocate",
    "make_session",
    "request_control",
]

USER_AGENT = "gatewatch-agent"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


@dataclass(frozen=True)
class ApiFailure:
    """Why a collector call did not give an answer (short, fit for ``status``)."""

    failure: str
    collector: str = ""

    def __str__(self) -> str:
        return f"{self.collector}: {self.failure}" if self.collector else self.failure


@dataclass(frozen=True)
class Geolocation:
    probe_asn: str
    probe_cc: str
    probe_network_name: str
    # The address the collector saw: kept in memory only, to scrub it from measurements.
    probe_ip: str | None


def api_url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/api/v1/{path}"


def _host(base: str) -> str:
    return urlsplit(base).hostname or base


def describe_failure(exc: BaseException) -> str:
    """A failure string for an aiohttp exception (the underlying OS error where there is one)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify(exc.os_error)
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"http_{exc.status}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "eof_error"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url"
    return classify(exc)


def make_session(
    *, source_address: str | None = None, ca_file: str | None = None, limit: int = 8
) -> aiohttp.ClientSession:
    """A client session for collector calls. ``source_address`` binds it (labs put the agent inside an
    emulated network); ``ca_file`` trusts a lab's CA. No cookies: nothing links one call to the next."""
    # A lab's CA is trusted in addition to the system's roots, so the same flag works with a public collector.
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    connector = aiohttp.TCPConnector(
        limit=limit,
        ssl=context,
        local_addr=(source_address, 0) if source_address else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=DEFAULT_TIMEOUT,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )


async def _json(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[Any, None] | tuple[None, str]:
    try:
        async with session.request(method, url, json=body) as response:
            if response.status != 200:
                return None, f"http_{response.status}"
            return await response.json(content_type=None), None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return None, describe_failure(exc)
    except ValueError:
        return None, "bad_answer"


async def geolocate(session: aiohttp.ClientSession, bases: list[str]) -> Geolocation | ApiFailure:
    """Ask each collector in turn where we are; the first answer wins."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        data, error = await _json(session, "GET", api_url(base, "geolocate"))
        if error is None and isinstance(data, dict):
            try:
                return Geolocation(
                    probe_asn=str(data.get("probe_asn") or "AS0"),
                    probe_cc=str(data.get("probe_cc") or "ZZ"),
                    probe_network_name=str(data.get("probe_network_name") or ""),
                    probe_ip=str(data["probe_ip"]) if data.get("probe_ip") else None,
                )
            except (TypeError, ValueError):
                error = "bad_answer"
        failure = ApiFailure(error or "bad_answer", _host(base))
    return failure


async def request_control(
    session: aiohttp.ClientSession, base: str, request: ControlRequest
) -> ControlObservations | ApiFailure:
    data, error = await _json(session, "POST", api_url(base, "control"), request.model_dump(mode="json"))
    if error is not None:
        return ApiFailure(error, _host(base))
    try:
        return ControlObservations.model_validate(data)
    except ValidationError:
        return ApiFailure("bad_answer", _host(base))


async def fetch_test_list(session: aiohttp.ClientSession, bases: list[str], cc: str) -> str | ApiFailure:
    """The operator's test list for country ``cc`` as CSV text, from the first collector that answers."""
    failure = ApiFailure("no collector configured")
    for base in bases:
        try:
            async with session.get(api_url(base, "test-list"), params={"cc": cc}) as response:
                if response.status == 200:
                    return await response.text()
                failure = ApiFailure(f"http_{response.status}", _host(base))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure = ApiFailure(describe_failure(exc), _host(base))
    return failure

"""The research API: ``GET /api/v1/measurements`` (a page of rows with the server's verdict) and
``GET /api/v1/measurements/export`` (the whole selection, streamed as JSON Lines, CSV, Parquet or OONI's
Web Connectivity JSON Lines).

Both take the same filters, described once in :data:`FILTER_PARAMETERS` (the OpenAPI document is built from
that table, so the documentation cannot drift from what is parsed). A bad value is the client's fault and is
answered 400 with the parameter's name; nothing a client sends reaches the store unchecked, because a value a
database rejects (a NUL byte, say) would otherwise surface as a server error.

Nothing here identifies a volunteer: rows carry no address, and the envelope's key and signature are never
read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gatewatch.core.measurement import MAX_INPUT_LENGTH, MEASUREMENT_UID_PATTERN
from gatewatch.core.vocabulary import (
    BLOCKING_LABELS,
    INVALID_CURSOR,
    INVALID_PARAMETER,
    REPEATED_PARAMETER,
    UNKNOWN_PARAMETER,
)
from gatewatch.core.wire import MAX_PAGE_ROWS

from .appkeys import METRICS_KEY, SETTINGS_KEY, STORE_KEY
from .export_process import process_export
from .exports import EXPORT_FORMATS, MEDIA_TYPES, measurement_row
from .responses import error_response
from .store.base import CursorError, MeasurementFilter, decode_cursor

__all__ = [
    "DEFAULT_LIMIT",
    "EXPORT_PARAMETERS",
    "EXPORT_PATH",
    "FILTER_PARAMETERS",
    "LIST_PARAMETERS",
    "LIST_PATH",
    "MAX_LIMIT",
    "BadQuery",
    "QueryParameter",
    "add_research_routes",
    "parse_filter",
]

LIST_PATH = "/api/v1/measurements"
EXPORT_PATH = "/api/v1/measurements/export"
DEFAULT_LIMIT = 100
MAX_LIMIT = MAX_PAGE_ROWS
DEFAULT_EXPORT_FORMAT = "jsonl"

log = logging.getLogger(__name__)

_MAX_TEXT = MAX_INPUT_LENGTH
_MAX_CURSOR = 512
_UID_RE = re.compile(MEASUREMENT_UID_PATTERN)
_CC_RE = re.compile(r"^[A-Za-z]{2}$")
_ASN_RE = re.compile(r"^(?:AS)?([0-9]{1,10})$", re.IGNORECASE)
_TEST_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BadQuery(Exception):
    """A query the client got wrong: answered 400 ``{"error", "detail"}``."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail

    def response(self) -> web.Response:
        return error_response(400, self.error, self.detail)


@dataclass(frozen=True)
class QueryParameter:
    """One query parameter: its name, its JSON Schema and what it means (for the OpenAPI document)."""

    name: str
    schema: dict[str, Any]
    description: str


FILTER_PARAMETERS: tuple[QueryParameter, ...] = (
    QueryParameter(
        "probe_cc",
        {"type": "string", "pattern": _CC_RE.pattern},
        "Country code the measurement was made in (case-insensitive).",
    ),
    QueryParameter(
        "probe_asn",
        {"type": "string", "pattern": "^(?:[Aa][Ss])?[0-9]{1,10}$"},
        "Network the measurement was made in: AS64501 or 64501.",
    ),
    QueryParameter("test_name", {"type": "string", "pattern": _TEST_NAME_RE.pattern}, "For example web."),
    QueryParameter("input", {"type": "string", "maxLength": _MAX_TEXT}, "The exact URL measured."),
    QueryParameter("domain", {"type": "string", "maxLength": 253}, "Host of the URL (case-insensitive)."),
    QueryParameter(
        "since",
        {"type": "string", "examples": ["2026-11-23T00:00:00Z", "2026-11-23"]},
        "Measurements started at or after this ISO 8601 time (a time without a zone is UTC; a date alone "
        "is its midnight UTC).",
    ),
    QueryParameter(
        "until",
        {"type": "string", "examples": ["2026-11-24T00:00:00Z"]},
        "Measurements started before this time (read as since is).",
    ),
    QueryParameter("anomaly", {"type": "boolean"}, "Whether the server's verdict found an anomaly."),
    QueryParameter(
        "blocking",
        {"type": "string", "enum": list(BLOCKING_LABELS)},
        "The server's verdict (OONI web_connectivity's blocking value; null: no verdict could be made).",
    ),
)
LIST_PARAMETERS: tuple[QueryParameter, ...] = (
    *FILTER_PARAMETERS,
    QueryParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Rows per page.",
    ),
    QueryParameter(
        "cursor",
        {"type": "string", "maxLength": _MAX_CURSOR},
        "The next_cursor of the previous page, with the same filters.",
    ),
)
EXPORT_PARAMETERS: tuple[QueryParameter, ...] = (
    QueryParameter(
        "format",
        {"type": "string", "enum": list(EXPORT_FORMATS), "default": DEFAULT_EXPORT_FORMAT},
        "jsonl: OONI-compatible measurements with the server's verdict under analysis; csv: a flattened "
        "summary; parquet: the same summary, typed; ooni: OONI Web Connectivity measurements as OONI's own "
        "tools load them, gatewatch's verdict and evidence under test_keys.gatewatch.",
    ),
    *FILTER_PARAMETERS,
)


def _single_values(query: MultiMapping[str], allowed: tuple[QueryParameter, ...]) -> dict[str, str]:
    """Each parameter once. An unknown name is refused: a typo (``cc=`` for ``probe_cc=``) would otherwise
    silently widen the selection to everything."""
    names = {p.name for p in allowed}
    values: dict[str, str] = {}
    for name, value in query.items():  # every pair: iterating a multidict's keys yields each name once
        if name not in names:
            raise BadQuery(UNKNOWN_PARAMETER, f"{name[:64]!r} is not a parameter of this endpoint")
        if name in values:
            raise BadQuery(REPEATED_PARAMETER, f"{name} is given more than once")
        if not value:
            raise BadQuery(INVALID_PARAMETER, f"{name}: empty value")
        if len(value) > _MAX_TEXT:
            raise BadQuery(INVALID_PARAMETER, f"{name}: longer than {_MAX_TEXT} characters")
        if "\x00" in value:  # PostgreSQL text cannot hold it: refused here rather than failing there
            raise BadQuery(INVALID_PARAMETER, f"{name}: contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no database accepts it
            raise BadQuery(INVALID_PARAMETER, f"{name}: not valid Unicode") from None
        values[name] = value
    return values


def _parse_time(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        example = "2026-11-23T13:40:00Z"
        raise BadQuery(INVALID_PARAMETER, f"{name}: expected an ISO 8601 time such as {example}") from None


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise BadQuery(INVALID_PARAMETER, f"{name}: expected true or false")
    return lowered == "true"


def _matching(name: str, pattern: re.Pattern[str], explain: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):  # not match: $ also matches before a final newline
            raise BadQuery(INVALID_PARAMETER, f"{name}: {explain}")
        return text

    return check


_check_cc = _matching("probe_cc", _CC_RE, "expected a two-letter country code")
_check_test_name = _matching("test_name", _TEST_NAME_RE, "expected a test name such as web")


def parse_filter(query: Mapping[str, str]) -> MeasurementFilter:
    """The filters among ``query`` (already reduced to one value each), normalised the way rows are
    stored; raises :class:`BadQuery`."""
    asn = _ASN_RE.fullmatch(query["probe_asn"]) if "probe_asn" in query else None
    if "probe_asn" in query and asn is None:
        raise BadQuery(INVALID_PARAMETER, "probe_asn: expected AS1234 or 1234")
    domain = query.get("domain")
    if domain is not None and len(domain) > 253:
        raise BadQuery(INVALID_PARAMETER, "domain: longer than 253 characters")
    since = _parse_time("since", query["since"]) if "since" in query else None
    until = _parse_time("until", query["until"]) if "until" in query else None
    if since is not None and until is not None and since > until:
        raise BadQuery(INVALID_PARAMETER, "since: later than until")
    blocking = query.get("blocking")
    if blocking is not None and blocking not in BLOCKING_LABELS:
        raise BadQuery(INVALID_PARAMETER, f"blocking: one of {', '.join(BLOCKING_LABELS)}")
    return MeasurementFilter(
        probe_cc=_check_cc(query["probe_cc"]).upper() if "probe_cc" in query else None,
        probe_asn=f"AS{asn.group(1)}" if asn is not None else None,
        test_name=_check_test_name(query["test_name"]) if "test_name" in query else None,
        input=query.get("input"),
        domain=domain.lower() if domain is not None else None,
        since=since,
        until=until,
        anomaly=_parse_bool("anomaly", query["anomaly"]) if "anomaly" in query else None,
        blocking=blocking,
    )


def _parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadQuery(INVALID_PARAMETER, f"limit: an integer from 1 to {MAX_LIMIT}")
    return int(text)


# A client cursor is the store's cursor (a position: start time and uid of the last row sent) and a check
# over it and the filters. The check is not a secret: a client that forges a position only skips ahead, which
# the since filter lets it do anyway. It catches a cursor that was damaged in transit or is replayed with
# other filters (which would silently skip or repeat rows) and answers 400 instead.
def _cursor_check(store_cursor: str, f: MeasurementFilter) -> str:
    parts = [None if v is None else v.isoformat() if isinstance(v, datetime) else v for v in vars(f).values()]
    text = json.dumps([store_cursor, parts], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _client_cursor(store_cursor: str, f: MeasurementFilter) -> str:
    return f"{store_cursor}.{_cursor_check(store_cursor, f)}"


def _store_cursor(cursor: str, f: MeasurementFilter) -> str:
    store_cursor, _, check = cursor.rpartition(".")
    if len(cursor) > _MAX_CURSOR or not store_cursor or check != _cursor_check(store_cursor, f):
        raise BadQuery(INVALID_CURSOR, "not a cursor this API handed out for these filters")
    try:
        _, uid = decode_cursor(store_cursor)
    except (CursorError, OverflowError):
        raise BadQuery(INVALID_CURSOR, "malformed cursor") from None
    if not _UID_RE.fullmatch(uid):
        raise BadQuery(INVALID_CURSOR, "malformed cursor")
    return store_cursor


async def _list(request: web.Request) -> web.Response:
    try:
        query = _single_values(request.query, LIST_PARAMETERS)
        f = parse_filter(query)
        limit = _parse_limit(query.get("limit"))
        after = _store_cursor(query["cursor"], f) if "cursor" in query else None
    except BadQuery as bad:
        return bad.response()
    store_seconds = request.app[METRICS_KEY].store_seconds.labels(operation="page")
    started = time.perf_counter()
    try:
        rows, next_store_cursor = await request.app[STORE_KEY].page(f, after, limit)
    except CursorError:  # checked above; kept in case a store's own cursor rules are stricter
        return BadQuery(INVALID_CURSOR, "malformed cursor").response()
    finally:
        store_seconds.observe(time.perf_counter() - started)
    next_cursor = _client_cursor(next_store_cursor, f) if next_store_cursor is not None else None
    # A MeasurementPage; its rows are served as stored (exports.measurement_row).
    return web.json_response({"results": [measurement_row(row) for row in rows], "next_cursor": next_cursor})


_FILE_EXTENSIONS = {"ooni": "ooni.jsonl"}


def _filename(fmt: str) -> str:
    return f"gatewatch-measurements-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.{_FILE_EXTENSIONS.get(fmt, fmt)}"


async def _close(stream: object) -> None:
    if isinstance(stream, AsyncGenerator):
        await stream.aclose()  # at once, not when collected: e.g. the Parquet staging files are removed


async def _export(request: web.Request) -> web.StreamResponse:
    try:
        query = _single_values(request.query, EXPORT_PARAMETERS)
        fmt = query.get("format", DEFAULT_EXPORT_FORMAT)
        if fmt not in EXPORT_FORMATS:
            raise BadQuery(INVALID_PARAMETER, f"format: one of {', '.join(EXPORT_FORMATS)}")
        f = parse_filter(query)
    except BadQuery as bad:
        return bad.response()
    # Made by a child process, so that neither the event loop nor the GIL is taken from ingest. A store
    # that is down is a 503 here (the child would only find out after the headers).
    await request.app[STORE_KEY].ping()
    stream = process_export(request.app[SETTINGS_KEY].db, fmt, f)
    try:
        # The first chunk is read before any header is sent, so that a store that is down at the start is
        # an honest 503 (from the app's error middleware) rather than an empty 200.
        first = await anext(stream, None)
    except BaseException:
        await _close(stream)
        raise
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{_filename(fmt)}"',
        }
    )
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        if first is not None:
            await response.write(first)
            async for chunk in stream:
                await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        # The client went away mid-download: nothing to answer, and nothing went wrong here.
        log.info("export abandoned by the client", extra={"format": fmt})
    except Exception:
        # The headers are out, so an error response is impossible. Cutting the connection before the last
        # chunk lets the client tell an incomplete file from a complete one.
        log.exception("export failed mid-stream", extra={"format": fmt})
        if request.transport is not None:
            request.transport.close()
    finally:
        await _close(stream)
    return response


def add_research_routes(app: web.Application) -> None:
    app.router.add_get(LIST_PATH, _list)
    # No HEAD: it would run the whole export only for its body to be thrown away.
    app.router.add_get(EXPORT_PATH, _export, allow_head=False)

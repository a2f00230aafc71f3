"""Confirmation requests: the URLs of a country that just showed an anomaly somewhere, for the country's
other agents to measure at once (``GET /api/v1/confirm?cc=XL``), and the sightings that list a URL before
any measurement of it is uploaded (``POST /api/v1/confirm``).

A gateway-level verdict needs two networks to agree; waiting for the other networks' next scheduled pass
to reach the URL takes hours. So when an accepted measurement shows an anomaly (judged by the collector,
from a network that speaks for itself: not ``AS0``, no mismatch flag), its URL is listed for that country
for ``CONFIRM_WINDOW``. Online agents of the country poll the list about once a minute (with jitter,
within their volunteer's budget), measure those few URLs and upload at once.

A scheduled pass's own uploads wait the volunteer's upload delay (5 to 60 minutes), so the first anomaly
would reach the list only then. A **sighting** closes that gap: right after a pass that found anomalies, the
agent says only *which* test-list URLs looked anomalous in its country (no measurement, no key, no token,
no network: nothing that links it to a volunteer, and nothing a verdict rests on). Because anyone can send
one, sighted URLs are kept apart from the judged ones and bounded: listed for ``SIGHTING_WINDOW`` only, at
most ``MAX_SIGHTING_URLS`` per country (a new one replaces the country's oldest sighted URL), and a sighting
never evicts or displaces a URL listed because of stored, judged anomalies. A liar can at most make the
country's agents measure a few public test-list URLs now, which they would measure anyway; the verdict
still rests on the uploaded, judged measurements.

What is listed, and what is not:
- only URLs on the operator's public test list for that country (its own or the global list): an agent is
  never sent to a URL someone merely uploaded or sighted;
- only the URLs: nothing about who reported the anomaly, from which network, or when;
- at most ``MAX_JUDGED_CONFIRMATIONS`` judged URLs per country, the most recent first, then at most
  ``MAX_SIGHTING_URLS`` sighted ones.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from gatewatch.analysis.networks import StoredRow
from gatewatch.core.vocabulary import (
    BODY_TOO_LARGE,
    INVALID_CC,
    INVALID_INPUT,
    INVALID_JSON,
    INVALID_REQUEST,
    NOT_LISTED,
    NOTHING_LISTABLE,
    RATE_LIMITED,
    UNREADABLE_BODY,
    WITHHELD_CC,
)
from gatewatch.core.wire import (
    MAX_JUDGED_CONFIRMATIONS,
    MAX_SIGHTING_BODY,
    MAX_SIGHTING_URLS,
    ConfirmationList,
    Sighting,
    SightingAnswer,
    SightingRejection,
)

from .aggregate import observation_of
from .appkeys import INGEST_HOOKS_KEY
from .metrics import SIGHTING_METRICS_KEY, SightingMetrics
from .ratelimit import TokenBuckets, retry_after_seconds
from .responses import error_response, model_response
from .testlists import TEST_LISTS_KEY

__all__ = [
    "CONFIRMATION_BOARD_KEY",
    "CONFIRM_PATH",
    "CONFIRM_WINDOW",
    "MAX_CONFIRM_URLS",
    "POLL_SECONDS",
    "SIGHTING_WINDOW",
    "ConfirmationBoard",
    "add_confirm_routes",
]

CONFIRM_PATH = "/api/v1/confirm"
CONFIRM_WINDOW = 15 * 60.0  # seconds a URL stays listed after its latest anomaly
MAX_CONFIRM_URLS = MAX_JUDGED_CONFIRMATIONS
SIGHTING_WINDOW = 5 * 60.0  # seconds a sighted URL stays listed after its latest sighting
# Sightings per second (and burst) per country: an honest country sends about one per agent and slice.
SIGHTING_RATE, SIGHTING_BURST = 2.0, 60
_READ_CHUNK = 4096
POLL_SECONDS = 60  # what agents are told: poll about this often (each adds its own jitter)
MAX_TRACKED = 10_000  # (country, URL) pairs remembered: bounded memory whatever is uploaded
_CC = re.compile(r"^[A-Za-z]{2}$")


class ConfirmationBoard:
    """Recent anomalies per (country, URL): judged ones fed by an ingest hook, sighted ones by sightings
    (kept apart, with their own window and bound); read by the endpoint."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window: float = CONFIRM_WINDOW,
        sighting_window: float = SIGHTING_WINDOW,
    ) -> None:
        self._clock = clock
        self._window = window
        self._sighting_window = sighting_window
        self._latest: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest anomaly first
        # country -> URL -> latest sighting, oldest first; at most MAX_SIGHTING_URLS per country, and the
        # countries are two-letter codes: bounded whatever is sent
        self._sighted: dict[str, OrderedDict[str, float]] = {}

    def add_rows(self, rows: Iterable[StoredRow]) -> None:
        now = self._clock()
        for row in rows:
            obs = observation_of(row)
            if not (obs.anomaly and obs.judged and obs.speaks_for_network):
                continue
            key = (obs.probe_cc, obs.input)
            self._latest[key] = now
            self._latest.move_to_end(key)
        while len(self._latest) > MAX_TRACKED:
            self._latest.popitem(last=False)

    def add_sighting(self, cc: str, urls: Iterable[str]) -> None:
        """List ``urls`` (already checked against the country's test list) as sighted in ``cc`` now, unless
        a judged anomaly lists them already; when the country holds ``MAX_SIGHTING_URLS``, each new URL
        replaces its oldest sighted one."""
        now = self._clock()
        sighted = self._sighted.setdefault(cc, OrderedDict())
        for url in urls:
            if self._latest.get((cc, url), -float("inf")) >= now - self._window:
                continue  # listed already because of a judged anomaly: no sighted slot spent on it
            sighted[url] = now
            sighted.move_to_end(url)
            while len(sighted) > MAX_SIGHTING_URLS:
                sighted.popitem(last=False)

    def urls(self, cc: str, allowed: Callable[[str], bool]) -> list[str]:
        """The country's URLs with an anomaly within the window that ``allowed`` lets through: the judged
        ones (newest first, at most ``MAX_CONFIRM_URLS``), then the sighted ones not already among them
        (newest first, at most ``MAX_SIGHTING_URLS``)."""
        now = self._clock()
        oldest = now - self._window
        while self._latest and next(iter(self._latest.values())) < oldest:
            self._latest.popitem(last=False)
        judged = [
            url for (country, url), _ in reversed(self._latest.items()) if country == cc and allowed(url)
        ][:MAX_CONFIRM_URLS]
        sighted = self._sighted.get(cc, OrderedDict())
        while sighted and next(iter(sighted.values())) < now - self._sighting_window:
            sighted.popitem(last=False)
        if not sighted:
            self._sighted.pop(cc, None)
        already = set(judged)
        extra = [url for url in reversed(sighted) if url not in already and allowed(url)]
        return judged + extra[:MAX_SIGHTING_URLS]


def _test_list_urls(csv_bytes: bytes | None) -> frozenset[str]:
    if not csv_bytes:
        return frozenset()
    rows = csv.reader(io.StringIO(csv_bytes.decode("utf-8", errors="replace"), newline=""))
    next(rows, None)  # the header
    return frozenset(row[0].strip() for row in rows if row and row[0].strip())


CONFIRMATION_BOARD_KEY = web.AppKey("gatewatch_confirmation_board", ConfirmationBoard)
SIGHTING_BUCKETS_KEY = web.AppKey("gatewatch_sighting_buckets", TokenBuckets)


async def handle_confirm(request: web.Request) -> web.Response:
    cc = request.query.get("cc", "")
    if not _CC.match(cc):
        raise web.HTTPBadRequest(text="cc must be a two-letter country code")
    cc = cc.upper()
    listed = _test_list_urls(request.app[TEST_LISTS_KEY].for_country(cc))
    urls = request.app[CONFIRMATION_BOARD_KEY].urls(cc, listed.__contains__)
    return model_response(ConfirmationList(cc=cc, urls=urls, poll_seconds=POLL_SECONDS))


class _Refused(Exception):
    """A sighting refused as a whole: its answer, and the ``gatewatch_sightings_total`` result."""

    def __init__(
        self, status: int, error: str, detail: str, result: str, headers: dict[str, str] | None = None
    ):
        super().__init__(error)
        self.answer = error_response(status, error, detail, headers)
        self.result = result


async def _read_sighting(request: web.Request) -> Sighting:
    too_large = _Refused(413, BODY_TOO_LARGE, f"at most {MAX_SIGHTING_BODY} bytes", "too_large")
    if request.content_length is not None and request.content_length > MAX_SIGHTING_BODY:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > MAX_SIGHTING_BODY:  # a chunked body is cut off here, too
                raise too_large
    except (OSError, ValueError) as exc:
        raise _Refused(400, UNREADABLE_BODY, str(exc)[:200], "bad_request") from None
    try:
        return Sighting.model_validate_json(bytes(body))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            raise _Refused(400, INVALID_JSON, f"{where}: {first['msg']}"[:300], "bad_request") from None
        raise _Refused(422, INVALID_REQUEST, f"{where}: {first['msg']}"[:300], "invalid") from None


def _url_problem(url: str) -> bool:
    """Whether ``url`` is not an http(s) URL with a host (malformed, whatever the test list holds)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return True
    return parts.scheme not in ("http", "https") or not parts.hostname or url != url.strip()


def judge_sighting(sighting: Sighting, listed: frozenset[str]) -> SightingAnswer:
    """Which URLs of ``sighting`` may be listed (on ``listed``, the country's public test list, and well
    formed), and why each other one may not; repeats count once."""
    accepted: list[str] = []
    rejected: list[SightingRejection] = []
    for url in dict.fromkeys(sighting.urls):
        if _url_problem(url):
            rejected.append(SightingRejection(url=url, reason=INVALID_INPUT))
        elif url not in listed:
            rejected.append(SightingRejection(url=url, reason=NOT_LISTED))
        else:
            accepted.append(url)
    return SightingAnswer(accepted=accepted, rejected=rejected)


async def handle_sighting(request: web.Request) -> web.Response:
    """``POST /api/v1/confirm``: list a sighting's test-list URLs for the country's agents. Nothing about
    the request (its address, its headers) is kept or logged; only the outcome is counted."""
    metrics: SightingMetrics = request.app[SIGHTING_METRICS_KEY]
    try:
        sighting = await _read_sighting(request)
        cc = sighting.cc.upper()
        if cc == WITHHELD_CC:
            raise _Refused(422, INVALID_CC, f"{WITHHELD_CC} is no country: nothing to confirm", "invalid")
        wait = request.app[SIGHTING_BUCKETS_KEY].take(cc.encode())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            headers = {"Retry-After": str(seconds)}
            raise _Refused(429, RATE_LIMITED, f"retry in {seconds} s", RATE_LIMITED, headers)
        answer = judge_sighting(sighting, _test_list_urls(request.app[TEST_LISTS_KEY].for_country(cc)))
        if not answer.accepted:
            why = ", ".join(f"{r.url[:80]}: {r.reason}" for r in answer.rejected[:3])
            raise _Refused(422, NOTHING_LISTABLE, f"no URL of the sighting can be listed ({why})", "rejected")
    except _Refused as refused:
        metrics.sightings.labels(result=refused.result).inc()
        return refused.answer
    request.app[CONFIRMATION_BOARD_KEY].add_sighting(cc, answer.accepted)
    metrics.sightings.labels(result="accepted").inc()
    return model_response(answer)


def add_confirm_routes(app: web.Application) -> ConfirmationBoard:
    board = ConfirmationBoard()
    app[CONFIRMATION_BOARD_KEY] = board
    app[SIGHTING_BUCKETS_KEY] = TokenBuckets(SIGHTING_RATE, SIGHTING_BURST, max_keys=1000)
    app[INGEST_HOOKS_KEY].append(board.add_rows)
    app.router.add_get(CONFIRM_PATH, handle_confirm)
    app.router.add_post(CONFIRM_PATH, handle_sighting)
    return board

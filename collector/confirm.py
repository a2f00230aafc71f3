"""Confirmation requests: the URLs of a country that just showed an anomaly somewhere, for the country's
other agents to measure at once (``GET /api/v1/confirm?cc=XL``).

A gateway-level verdict needs two networks to agree; waiting for the other networks' next scheduled pass
to reach the URL takes hours. So when an accepted measurement shows an anomaly (judged by the collector,
from a network that speaks for itself: not ``AS0``, no mismatch flag), its URL is listed for that country
for ``CONFIRM_WINDOW``. Online agents of the country poll the list about once a minute (with jitter,
within their volunteer's budget), measure those few URLs and upload at once.

What is listed, and what is not:
- only URLs on the operator's public test list for that country (its own or the global list): an agent is
  never sent to a URL someone merely uploaded;
- only the URLs: nothing about who reported the anomaly, from which network, or when;
- at most ``MAX_CONFIRM_URLS`` per country, the most recent first.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from aiohttp import web

from gatewatch.analysis.networks import Observation, StoredRow
from gatewatch.core.wire import ConfirmationList

from .appkeys import INGEST_HOOKS_KEY
from .responses import model_response
from .testlists import TEST_LISTS_KEY

__all__ = [
    "CONFIRM_PATH",
    "CONFIRM_WINDOW",
    "MAX_CONFIRM_URLS",
    "POLL_SECONDS",
    "ConfirmationBoard",
    "add_confirm_routes",
]

CONFIRM_PATH = "/api/v1/confirm"
CONFIRM_WINDOW = 15 * 60.0  # seconds a URL stays listed after its latest anomaly
MAX_CONFIRM_URLS = 20
POLL_SECONDS = 60  # what agents are told: poll about this often (each adds its own jitter)
MAX_TRACKED = 10_000  # (country, URL) pairs remembered: bounded memory whatever is uploaded
_CC = re.compile(r"^[A-Za-z]{2}$")


class ConfirmationBoard:
    """Recent anomalies per (country, URL): fed by an ingest hook, read by the endpoint."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = CONFIRM_WINDOW) -> None:
        self._clock = clock
        self._window = window
        self._latest: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest anomaly first

    def add_rows(self, rows: Iterable[StoredRow]) -> None:
        now = self._clock()
        for row in rows:
            obs = Observation.from_row(row)
            if not (obs.anomaly and obs.judged and obs.speaks_for_network):
                continue
            key = (obs.probe_cc, obs.input)
            self._latest[key] = now
            self._latest.move_to_end(key)
        while len(self._latest) > MAX_TRACKED:
            self._latest.popitem(last=False)

    def urls(self, cc: str, allowed: Callable[[str], bool]) -> list[str]:
        """The country's URLs with an anomaly within the window that ``allowed`` lets through (newest
        first)."""
        oldest = self._clock() - self._window
        while self._latest and next(iter(self._latest.values())) < oldest:
            self._latest.popitem(last=False)
        found = [
            url for (country, url), _ in reversed(self._latest.items()) if country == cc and allowed(url)
        ]
        return found[:MAX_CONFIRM_URLS]


def _test_list_urls(csv_bytes: bytes | None) -> frozenset[str]:
    if not csv_bytes:
        return frozenset()
    rows = csv.reader(io.StringIO(csv_bytes.decode("utf-8", errors="replace"), newline=""))
    next(rows, None)  # the header
    return frozenset(row[0].strip() for row in rows if row and row[0].strip())


CONFIRMATION_BOARD_KEY = web.AppKey("gatewatch_confirmation_board", ConfirmationBoard)


async def handle_confirm(request: web.Request) -> web.Response:
    cc = request.query.get("cc", "")
    if not _CC.match(cc):
        raise web.HTTPBadRequest(text="cc must be a two-letter country code")
    cc = cc.upper()
    listed = _test_list_urls(request.app[TEST_LISTS_KEY].for_country(cc))
    urls = request.app[CONFIRMATION_BOARD_KEY].urls(cc, listed.__contains__)
    return model_response(ConfirmationList(cc=cc, urls=urls, poll_seconds=POLL_SECONDS))


def add_confirm_routes(app: web.Application) -> ConfirmationBoard:
    board = ConfirmationBoard()
    app[CONFIRMATION_BOARD_KEY] = board
    app[INGEST_HOOKS_KEY].append(board.add_rows)
    app.router.add_get(CONFIRM_PATH, handle_confirm)
    return board

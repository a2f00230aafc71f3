"""The local page's application: every request passes the security gate (:mod:`.security`), then goes to
the page it names. It holds no state of its own beyond the token, the current run and the last time the
page was seen: settings, consent, the queue and the history are the agent's files, shared with the CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.vocabulary import METHOD_NOT_ALLOWED
from gatewatch.core.wire import ErrorBody

from ..consent import QUIZ, load_consent, quiz_mistakes, record_consent
from ..keys import load_or_create_key
from ..paths import DataPaths
from ..queue import MeasurementQueue
from ..settings import SettingsError, load_settings
from . import pages, result_pages
from .collector_verdict import CollectorVerdicts, fetch_collector_verdicts
from .http_server import Request, Response
from .runs import LabFlags, RunController, RunRefused
from .security import (
    TOKEN_FIELD,
    TOKEN_HEADER,
    ListenAddress,
    Refusal,
    host_allowed,
    new_token,
    same_origin,
    session_cookie,
    token_from_cookie,
    tokens_match,
)
from .settings_form import apply_form, form_values, read_raw, write_settings

__all__ = ["STATIC_FILES", "UiApp", "UiConfig", "static_file"]

log = logging.getLogger(__name__)

STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
RESULT_ROWS = 2000  # the results pages read at most this many of the newest measurements
EXPORT_ROWS = 100_000  # more than the queue keeps (its bounds): the export is every measurement it holds


def static_file(name: str) -> bytes:
    """A file of the page's ``static/`` folder, from the installed package (the wheel ships it)."""
    return files("gatewatch.agent.ui").joinpath("static", name).read_bytes()


@dataclass(frozen=True)
class UiConfig:
    paths: DataPaths
    listen: ListenAddress
    idle_timeout: float = 120.0  # seconds without a heartbeat from an open page (and no run) before quitting
    flags: LabFlags = LabFlags()


Route = Callable[[Request], Awaitable[Response]]


class UiApp:
    def __init__(self, config: UiConfig, token: str | None = None) -> None:
        self.config = config
        self.paths = config.paths
        self.token = token or new_token()
        self.port = 0  # set once listening
        self.runs = RunController(config.paths, config.flags)
        self.stopped = asyncio.Event()
        self.last_seen = time.monotonic()
        self._static = {name: static_file(name) for name in STATIC_FILES}
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/"): self.home,
            ("GET", "/consent"): self.consent,
            ("POST", "/consent"): self.give_consent,
            ("GET", "/settings"): self.settings,
            ("POST", "/settings"): self.save_settings,
            ("GET", "/run"): self.run,
            ("POST", "/run/start"): self.start_run,
            ("POST", "/run/cancel"): self.cancel_run,
            ("GET", "/api/progress"): self.progress,
            ("POST", "/api/heartbeat"): self.heartbeat,
            ("GET", "/results"): self.results,
            ("GET", "/measurement"): self.measurement,
            ("GET", "/api/collector-verdicts"): self.collector_verdicts,
            ("GET", "/queue"): self.queue,
            ("POST", "/queue/retry"): self.retry,
            ("GET", "/export.json"): self.export,
            ("POST", "/quit"): self.quit,
        }

    @property
    def url(self) -> str:
        """The address to open: it carries the token once; the page then lives on a cookie."""
        return f"http://{self.config.listen.url_host(self.port)}/?{urlencode({TOKEN_FIELD: self.token})}"

    # -- the gate ----------------------------------------------------------------------------------------

    def refusal(self, request: Request) -> Refusal | None:
        """Why this request is not answered, or None. Order: the Host (rebinding), the token (who), then
        for a POST the token again in the body or a header, and its Origin (CSRF)."""
        listen, port = self.config.listen, self.port
        if not host_allowed(request.headers.get("host"), listen, port):
            return Refusal(403, "bad_host", "This page answers only at its loopback address.")
        cookie = token_from_cookie(request.headers.get("cookie"), port)
        if not (tokens_match(cookie, self.token) or tokens_match(request.query.get(TOKEN_FIELD), self.token)):
            return Refusal(
                403,
                "no_token",
                "Open the address that `gatewatch-agent ui` printed or opened (it has a key).",
            )
        if request.method == "POST":
            given = request.headers.get(TOKEN_HEADER) or (request.form().get(TOKEN_FIELD) or [None])[0]
            if not tokens_match(given, self.token):
                return Refusal(403, "no_form_token", "This action must come from the page itself.")
            origin, site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
            if not same_origin(origin, site, listen, port):
                return Refusal(403, "cross_origin", "This action must come from the page itself.")
        elif request.method not in ("GET", "HEAD"):
            return Refusal(405, METHOD_NOT_ALLOWED, "Not something this page does.")
        return None

    async def handle(self, request: Request) -> Response:
        refused = self.refusal(request)
        if refused is not None:
            return _refusal_response(refused, request)
        self.last_seen = time.monotonic()
        if TOKEN_FIELD in request.query:  # first visit: the token moves to a cookie, out of the URL
            return _redirect(request.path, [("Set-Cookie", session_cookie(self.port, self.token))])
        if request.path.startswith("/static/"):
            return self.static(request)
        method = "GET" if request.method == "HEAD" else request.method
        route = self._routes.get((method, request.path))
        if route is None:
            if any(path == request.path for _, path in self._routes):
                return _refusal_response(Refusal(405, METHOD_NOT_ALLOWED, "Not something this page does."))
            return self._html(pages.message_page("Not found", "There is no such page.", self.token), 404)
        if request.path not in _WITHOUT_CONSENT and not self.consented:
            return _redirect("/consent")
        return await route(request)

    @property
    def consented(self) -> bool:
        record = load_consent(self.paths.consent)
        return record is not None and record.current

    def _html(self, text: str, status: int = 200) -> Response:
        return Response(status, text.encode())

    def static(self, request: Request) -> Response:
        name = request.path.removeprefix("/static/")
        if name not in self._static:
            return Response(404, b"not found", "text/plain; charset=utf-8")
        return Response(200, self._static[name], STATIC_FILES[name])

    # -- onboarding and settings ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return _redirect("/run")

    async def consent(self, request: Request) -> Response:
        record = load_consent(self.paths.consent)
        given = None if record is None else record.given_at
        current = record is not None and record.current
        return self._html(pages.consent_page(self.token, given_at=given, current=current))

    async def give_consent(self, request: Request) -> Response:
        form = request.form()
        answers: dict[int, int | None] = {}
        for index in range(len(QUIZ)):
            value = (form.get(f"q{index}") or [""])[0]
            answers[index] = int(value) if value.isdigit() else None
        mistakes = quiz_mistakes(answers)
        if mistakes or "agree" not in form:
            record = load_consent(self.paths.consent)
            page = pages.consent_page(
                self.token,
                given_at=None if record is None else record.given_at,
                current=False,
                mistakes=mistakes,
            )
            return self._html(page, 400)
        self.paths.create()
        record_consent(self.paths.consent)
        load_or_create_key(self.paths.key)  # as `init` does: the key that signs this agent's results
        return _redirect("/settings?welcome=1")

    async def settings(self, request: Request) -> Response:
        try:
            values = form_values(load_settings(self.paths.settings))
        except SettingsError as exc:
            return self._html(
                pages.message_page("Settings", f"agent.toml cannot be used: {exc}", self.token), 500
            )
        saved = request.query.get("saved") == "1"
        welcome = request.query.get("welcome") == "1"
        return self._html(pages.settings_page(self.token, values, saved=saved, welcome=welcome))

    async def save_settings(self, request: Request) -> Response:
        form = request.form()
        try:
            data = apply_form(read_raw(self.paths.settings), form)
        except SettingsError as exc:
            try:
                values = form_values(load_settings(self.paths.settings))
            except SettingsError:
                return self._html(pages.message_page("Settings", str(exc), self.token), 400)
            return self._html(pages.settings_page(self.token, values, error=str(exc)), 400)
        self.paths.create()
        write_settings(self.paths.settings, data)
        return _redirect("/settings?saved=1")

    # -- running -------------------------------------------------------------------------------------------

    async def run(self, request: Request) -> Response:
        error = request.query.get("error")
        return self._html(pages.run_page(self.token, running=self.runs.busy, error=error))

    async def start_run(self, request: Request) -> Response:
        try:
            self.runs.start()
        except RunRefused as exc:
            return _redirect("/run?" + urlencode({"error": str(exc)}))
        return _redirect("/run")

    async def cancel_run(self, request: Request) -> Response:
        self.runs.cancel()
        return _redirect("/run")

    async def progress(self, request: Request) -> Response:
        return _json(self.runs.progress.as_json())

    async def heartbeat(self, request: Request) -> Response:
        return Response(204, b"", "text/plain; charset=utf-8")

    # -- results and uploads ---------------------------------------------------------------------------

    def _open_queue(self) -> MeasurementQueue | None:
        return MeasurementQueue(self.paths.queue) if self.paths.queue.exists() else None

    async def results(self, request: Request) -> Response:
        queue = self._open_queue()
        if queue is None:
            groups = []
        else:
            with queue:
                groups = result_pages.group_runs(queue.recent(RESULT_ROWS))
        wanted = request.query.get("run")
        if wanted is None:
            return self._html(result_pages.runs_page(self.token, groups))
        group = next((g for g in groups if g.started == wanted), None)
        if group is None:
            return self._html(
                pages.message_page("Results", "No such run.", self.token, ("/results", "All runs")), 404
            )
        return self._html(result_pages.results_page(self.token, group))

    async def measurement(self, request: Request) -> Response:
        uid = request.query.get("uid", "")
        queue = self._open_queue()
        row = None
        if queue is not None:
            with queue:
                row = queue.get(uid)
        if row is None:
            return self._html(pages.message_page("A measurement", "No such measurement.", self.token), 404)
        summary = result_pages.group_runs([row])[0].rows[0]
        collector = None
        if row.state == "sent":
            data = summary["_measurement"]
            collector = await self._ask_collector([summary], {"input": str(data.get("input"))})
        return self._html(result_pages.measurement_page(self.token, summary, collector))

    async def collector_verdicts(self, request: Request) -> Response:
        """The collector's verdicts of one run's uploaded measurements, in words (the results page's
        script fills them in, so that a slow collector does not hold the page)."""
        queue = self._open_queue()
        groups = []
        if queue is not None:
            with queue:
                groups = result_pages.group_runs(queue.recent(RESULT_ROWS))
        group = next((g for g in groups if g.started == request.query.get("run")), None)
        sent = [row for row in group.rows if row["state"] == "sent"] if group else []
        if not sent:
            return _json({"verdicts": {}, "failure": None})
        networks = {(row.get("probe_asn"), row.get("probe_cc")) for row in sent}
        filters = {}
        if len(networks) == 1:
            asn, cc = networks.pop()
            filters = {"probe_asn": str(asn), "probe_cc": str(cc)}
        found = await self._ask_collector(sent, filters)
        words = {uid: result_pages.collector_words(row) for uid, row in found.rows.items()}
        return _json({"verdicts": words, "failure": found.failure})

    async def _ask_collector(self, rows: list[dict[str, Any]], filters: dict[str, str]) -> CollectorVerdicts:
        try:
            bases = load_settings(self.paths.settings).collector_urls
        except SettingsError:
            bases = []
        return await fetch_collector_verdicts(
            bases,
            {str(row["measurement_uid"]) for row in rows},
            [str(row["_measurement"].get("measurement_start_time")) for row in rows],
            filters,
            source_address=self.config.flags.source_address,
            ca_file=self.config.flags.ca_file,
        )

    async def queue(self, request: Request) -> Response:
        queue = self._open_queue()
        counts: dict[str, int] = {}
        reasons: dict[str, int] = {}
        quarantined, recent = [], []
        if queue is not None:
            with queue:
                counts = dict(queue.counts())
                reasons = queue.pending_reasons()
                quarantined = queue.quarantined(50)
                recent = queue.recent(50)
        notice = request.query.get("notice")
        page = result_pages.queue_page(
            self.token, counts, reasons, quarantined, recent, notice=notice, busy=self.runs.busy
        )
        return self._html(page)

    async def retry(self, request: Request) -> Response:
        try:
            report = await self.runs.retry_upload()
        except RunRefused as exc:
            return _redirect("/queue?" + urlencode({"notice": str(exc)}))
        notice = f"Uploaded {report.delivered}, rejected {report.quarantined}, "
        notice += f"still waiting {report.still_pending}"
        if report.last_error:
            notice += f" (last error: {report.last_error})"
        return _redirect("/queue?" + urlencode({"notice": notice + "."}))

    async def export(self, request: Request) -> Response:
        queue = self._open_queue()
        rows = []
        if queue is not None:
            with queue:
                rows = [
                    {
                        "measurement_uid": row.measurement_uid,
                        "upload_state": row.state,
                        "reason": row.reason,
                        "measurement": row.measurement(),
                    }
                    for row in queue.recent(EXPORT_ROWS)
                ]
        stamp = format_utc(utc_now()).replace(":", "")
        body = json.dumps({"exported_at": format_utc(utc_now()), "measurements": rows}, indent=1).encode()
        disposition = f'attachment; filename="gatewatch-results-{stamp}.json"'
        return Response(200, body, "application/json", [("Content-Disposition", disposition)])

    async def quit(self, request: Request) -> Response:
        asyncio.get_running_loop().call_later(0.2, self.stopped.set)  # after this answer has gone out
        text = "The agent's page has stopped. You can close this tab. Background runs (the daemon) go on."
        return self._html(pages.message_page("Stopped", text, self.token))

    async def watch_idle(self, check_every: float = 1.0) -> None:
        """Stop once no open page has been seen for ``idle_timeout`` seconds and nothing runs."""
        while not self.stopped.is_set():
            idle = time.monotonic() - self.last_seen
            if idle > self.config.idle_timeout and not self.runs.busy:
                log.info("no page open for %.0f s: stopping", idle)
                self.stopped.set()
                return
            try:
                await asyncio.wait_for(self.stopped.wait(), check_every)
            except TimeoutError:
                pass


_WITHOUT_CONSENT = frozenset({"/consent", "/quit", "/api/heartbeat", "/api/progress"})


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])


def _json(data: object, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), "application/json")


def _refusal_response(refusal: Refusal, request: Request | None = None) -> Response:
    """The API's error shape (:class:`ErrorBody`); a browser asking for a page gets the same words as a
    small page of their own (without the page's layout, which would carry the token)."""
    body = ErrorBody(error=refusal.reason, detail=refusal.detail)
    if request is not None and "text/html" in request.headers.get("accept", ""):
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>gatewatch: refused</title></head><body><h1>Refused</h1><p>{escape(body.detail)}</p>"
            f"<p><code>{escape(body.error)}</code></p></body></html>"
        )
        return Response(refusal.status, html.encode())
    return _json(body.model_dump(mode="json"), refusal.status)

"""The HTTP server around the application: aiohttp's own answers in the API's error shape, and a deadline
for every request's body.

A request aiohttp's parser refuses (a bad request line, a header too long, broken chunked framing in the
head) never reaches the application or its middlewares: aiohttp answers it itself, in plain text, and logs
it with the client's address. :class:`CollectorRunner` runs the application with a connection handler
whose answer is an ``ErrorBody`` (``malformed_http``), logged as one line without the client and counted
in ``gatewatch_ingest_requests_total``; and a request whose body is still incomplete shortly after
``body_timeout_seconds`` has its connection closed, whichever endpoint it is for. ``gatewatch-collector
serve`` uses it; so do the tests that speak raw HTTP to the collector.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from gatewatch.core.vocabulary import INTERNAL_ERROR, MALFORMED_HTTP

from .appkeys import METRICS_KEY, SETTINGS_KEY
from .metrics import IngestMetrics
from .responses import error_response

__all__ = ["CollectorRunner"]

log = logging.getLogger(__name__)


# The upload answers a slow body itself (408) at body_timeout_seconds; this backstop, a little later, closes
# the connection of any request whose body is still incomplete (the other endpoints read theirs in
# their own way, without a deadline).
_BACKSTOP_GRACE = 1.0


class _CollectorRequestHandler(web.RequestHandler):
    __slots__ = ()

    # Set on the subclass each server makes (see _Server): connections have no room for attributes.
    metrics: IngestMetrics | None = None
    body_seconds: float | None = None

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if self.body_seconds is None:
            return
        for _, payload in list(self._messages)[queued:]:  # the requests whose head just arrived
            if not payload.is_eof():
                self._loop.call_later(self.body_seconds + _BACKSTOP_GRACE, self._body_deadline, payload)

    def _body_deadline(self, payload: Any) -> None:
        if not payload.is_eof() and self.transport is not None:
            log.info("request body too slow: connection closed", extra={"timeout_s": self.body_seconds})
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp does: an answer is under way, the connection broken
            raise ConnectionError("an answer was already sent")
        if status >= 500:
            log.error("unhandled error in the HTTP server", exc_info=exc)
            error, detail = INTERNAL_ERROR, "see the collector's log"
        else:
            # aiohttp's message may quote the request's bytes: only the kind of error is logged or answered.
            kind = type(exc).__name__ if exc is not None else "BadHttpMessage"
            log.info("malformed request", extra={"status": status, "error_type": kind})
            error, detail = MALFORMED_HTTP, f"the request is not valid HTTP/1.1 ({kind})"
        if self.metrics is not None:
            self.metrics.requests.labels(result=error).inc()
        response = error_response(status, error, detail)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, making :class:`_CollectorRequestHandler` connections."""

    def __init__(self, base: web.Server, metrics: IngestMetrics, body_timeout: float) -> None:
        kwargs: dict[str, Any] = dict(base._kwargs)  # the application's handler_args and the runner's
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **kwargs,
        )
        attributes = {"__slots__": (), "metrics": metrics, "body_seconds": body_timeout}
        self._handler_class = type("CollectorRequestHandler", (_CollectorRequestHandler,), attributes)

    def __call__(self) -> web.RequestHandler:
        return self._handler_class(self, loop=self._loop, **self._kwargs)


class CollectorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors in the API's JSON error shape."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # starts the application (store, databases) as AppRunner does
        return _Server(base, self.app[METRICS_KEY], self.app[SETTINGS_KEY].body_timeout_seconds)

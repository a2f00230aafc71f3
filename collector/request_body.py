"""Reading an upload's body: bounded in size, in time and in decompression work, and every way it can fail
answered as a 4xx with a reason.

aiohttp's own decompression is switched off for the whole application (``auto_decompress=False`` in
``create_app``): it would inflate on the event loop, and keep inflating what the client still sends after
the answer (aiohttp reads the rest of a refused body before closing), so a 1 MB gzip of 1 GiB cost seconds
of CPU with ``/healthz`` stalled. Here the raw bytes are read (at most ``limit`` of them) and inflated in
steps of at most :data:`INFLATE_STEP` bytes of output, yielding to the loop between steps, until the
decoded body reaches ``limit``: the work is bounded by the limit, not by what the client sent.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gatewatch.core.vocabulary import (
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    TOO_MANY_UPLOADS,
    UNDECODABLE_BODY,
    UNREADABLE_BODY,
    UNSUPPORTED_CONTENT_ENCODING,
    UNSUPPORTED_MEDIA_TYPE,
)

from .responses import error_response

__all__ = [
    "INFLATE_STEP",
    "SUPPORTED_ENCODINGS",
    "UPLOAD_SLOTS_KEY",
    "RequestRefused",
    "UploadSlots",
    "content_coding",
    "read_body",
]

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
INFLATE_STEP = 256 * 1024  # output bytes per inflate call: well under a millisecond of CPU
# Content-Encoding values the collector decodes (``x-gzip`` is gzip's old name, RFC 9110 8.4.1.3).
SUPPORTED_ENCODINGS = ("gzip", "x-gzip", "deflate")


class RequestRefused(Exception):
    """The request as a whole cannot be processed (the client's fault unless ``status`` is 5xx)."""

    def __init__(
        self, status: int, error: str, detail: str, metric: str, headers: dict[str, str] | None = None
    ):
        super().__init__(f"{error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.metric = metric  # the gatewatch_ingest_requests_total result label
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.error, self.detail, self.headers)


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(413, BODY_TOO_LARGE, f"at most {limit} bytes (decoded)", "too_large")


def _undecodable(detail: str) -> RequestRefused:
    return RequestRefused(400, UNDECODABLE_BODY, detail, "bad_request")


def content_coding(request: web.Request) -> str | None:
    """The one content coding of the body (None: identity); refuses stacked or unknown codings."""
    codings = [
        part.strip().lower()
        for value in request.headers.getall("Content-Encoding", [])
        for part in value.split(",")
        if part.strip() and part.strip().lower() != "identity"
    ]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in SUPPORTED_ENCODINGS:
        raise RequestRefused(
            415,
            UNSUPPORTED_CONTENT_ENCODING,
            f"Content-Encoding: one of {', '.join(SUPPORTED_ENCODINGS)} or none",
            UNSUPPORTED_MEDIA_TYPE,
            {"Accept-Encoding": ", ".join(SUPPORTED_ENCODINGS)},
        )
    return "gzip" if codings[0] == "x-gzip" else codings[0]


class _Inflater:
    """gzip (several members allowed, as the format does) or deflate (zlib-wrapped or raw, as clients
    send both), decoded in bounded steps up to ``limit`` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []
        self._d: zlib._Decompress | None = None

    def _start(self, first_byte: int) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # RFC 9110's deflate is zlib-wrapped (CM = 8 in the low nibble of the first byte); some send raw.
        return zlib.decompressobj(zlib.MAX_WBITS if first_byte & 0x0F == 8 else -zlib.MAX_WBITS)

    async def feed(self, data: bytes) -> None:
        while True:
            if self._d is None or self._d.eof:
                if not data:
                    return
                if self._d is not None and self.coding != "gzip":
                    raise _undecodable("data after the end of the deflate stream")
                self._d = self._start(data[0])
            try:
                out = self._d.decompress(data, INFLATE_STEP)
            except zlib.error:
                raise _undecodable(f"the body is not valid {self.coding}") from None
            self.size += len(out)
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.parts.append(out)
            if self._d.eof:
                data = self._d.unused_data  # another gzip member, or garbage (refused above or by zlib)
            else:
                data = self._d.unconsumed_tail
                if not data and len(out) < INFLATE_STEP:  # input used up and no output held back
                    return
            await asyncio.sleep(0)  # one step at a time: other requests (and /healthz) run in between

    def finish(self) -> bytes:
        if self._d is None or not self._d.eof:
            raise _undecodable(f"the {self.coding} stream is truncated")
        return b"".join(self.parts)


async def _read_raw(request: web.Request, limit: int, inflater: _Inflater | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # Read in chunks so that a chunked upload without Content-Length is cut off at the limit, too.
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if inflater is not None:
            await inflater.feed(chunk)
        else:
            chunks.append(chunk)
    return inflater.finish() if inflater is not None else b"".join(chunks)


async def read_body(request: web.Request, limit: int, within_seconds: float) -> bytes:
    """The decoded body, at most ``limit`` bytes both as sent and decoded, read within ``within_seconds``.
    Raises :class:`RequestRefused` (413, 415, 400, 408) saying why not."""
    coding = content_coding(request)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    inflater = _Inflater(coding, limit) if coding is not None else None
    try:
        async with asyncio.timeout(within_seconds):
            return await _read_raw(request, limit, inflater)
    except TimeoutError:
        raise RequestRefused(
            408, BODY_TIMEOUT, f"the body must arrive within {within_seconds:g} s", BODY_TIMEOUT
        ) from None
    except (OSError, HttpProcessingError, asyncio.IncompleteReadError) as exc:
        # The client went away, or broke the framing (a short Content-Length, a bad chunk): nobody may be
        # left to answer. One line, no traceback, nothing about the client.
        log.info("upload body unreadable", extra={"error_type": type(exc).__name__})
        raise RequestRefused(400, UNREADABLE_BODY, "the body could not be read", UNREADABLE_BODY) from None


class UploadSlots:
    """How many uploads this process reads and judges at once: each holds up to a body's worth of memory
    and a worker thread's time, so beyond the cap a client is asked to come back (503 + Retry-After)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.busy = 0

    def take(self) -> None:
        if self.busy >= self.capacity:
            raise RequestRefused(
                503, TOO_MANY_UPLOADS, "too many uploads at once; retry later", TOO_MANY_UPLOADS,
                {"Retry-After": str(_BUSY_RETRY_AFTER)},
            )  # fmt: skip
        self.busy += 1

    def give_back(self) -> None:
        self.busy -= 1


_BUSY_RETRY_AFTER = 5
UPLOAD_SLOTS_KEY: Final = web.AppKey("gatewatch_upload_slots", UploadSlots)

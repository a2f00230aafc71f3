"""Structured logs (one JSON object per line) that never carry a volunteer's address.

Two defences: the access log is replaced by :class:`AccessLogger`, which writes method, path (without the
query string), status and duration and never reads the peer address; and :class:`JSONLineFormatter`
masks anything that parses as an IP address in every line, because libraries log addresses on their own
(aiohttp's "Error handling request from %s", for one).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

__all__ = ["ACCESS_LOGGER_NAME", "AccessLogger", "JSONLineFormatter", "configure_logging", "redact_addresses"]

ACCESS_LOGGER_NAME = "gatewatch.collector.access"
REDACTED = "[address]"

# Candidates only; each is confirmed with ipaddress before it is masked, so times such as 12:30:45 and
# version numbers such as 1.2.3 survive. An IPv4 address may end a sentence ("from 203.0.113.5."), but
# not run on into a longer dotted name or number. An IPv6 candidate may carry a trailing ":port" (an
# unbracketed address with all eight groups, as some libraries print a peer), which _mask splits off.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.\d{1,3}){3})?(?:%\w+)?(?::\d{1,5})?"
    r"(?![\w:])"
)
# The attributes every LogRecord has; anything else was passed with ``extra=`` and becomes a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _mask(match: re.Match[str]) -> str:
    text = match.group(0)
    if _is_address(text):
        return REDACTED
    # "2001:db8:1:2:3:4:5:6:8080": not an address as a whole, but an address and a port.
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host.count(":") >= 2 and _is_address(host):
        return f"{REDACTED}:{port}"
    return text


def redact_addresses(text: str) -> str:
    """``text`` with every IPv4/IPv6 address replaced by ``[address]``."""
    return _IPV6.sub(_mask, _IPV4.sub(_mask, text))


class JSONLineFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields, "exc"?}`` on one line, addresses masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_addresses(json.dumps(entry, default=str, ensure_ascii=False))


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without the client: its default format starts with the peer address."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,  # the path only: query strings can carry anything
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
            },
        )


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was made (a
    command run in-process, e.g. by a test runner, may swap and close the stream it started with)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger (aiohttp's included) to one JSON-lines handler. Called by the CLI only: logging
    is process-wide, so an application factory must not touch it."""
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(JSONLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

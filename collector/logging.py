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
# version numbers such as 1.2.3 survive.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.\d{1,3}){3})?(?:%\w+)?(?![\w:])"
)
# The attributes every LogRecord has; anything else was passed with ``extra=`` and becomes a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _mask(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    return REDACTED


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


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger (aiohttp's included) to one JSON-lines handler. Called by the CLI only: logging
    is process-wide, so an application factory must not touch it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

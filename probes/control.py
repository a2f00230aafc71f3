"""The control: what the same URL looks like from an uncensored vantage point.

The collector's ``POST /api/v1/control`` answers with a :class:`ControlObservations` (JSON), computed by
running the same probes from its own network and summarising them with :func:`summarise`. The emulated
network does the same from its clean vantage. Shapes follow OONI's web_connectivity test helper.
``POST /api/v1/controls`` takes up to ``MAX_CONTROL_BATCH`` requests at once (:class:`ControlBatchRequest`)
and answers each in order (:class:`ControlBatchResponse`): an agent measuring many URLs at a time sends
one request where it would send many.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CONTROL_ERROR_STATUS",
    "MAX_CONTROL_BATCH",
    "ControlBatchItem",
    "ControlBatchRequest",
    "ControlBatchResponse",
    "ControlDNS",
    "ControlHTTP",
    "ControlObservations",
    "ControlRequest",
    "ControlTCP",
    "ControlTLS",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlRequest(_Model):
    """Body of ``POST /api/v1/control``."""

    input: str  # the URL
    # Addresses the probe resolved: the control also tries these, to tell DNS from TCP/IP blocking.
    addrs: list[str] = Field(default_factory=list, max_length=16)


class ControlDNS(_Model):
    failure: str | None = None
    addrs: list[str] = Field(default_factory=list)
    # ASN of each address where known (same order is not implied: a mapping).
    asns: dict[str, int] = Field(default_factory=dict)


class ControlTCP(_Model):
    status: bool
    failure: str | None = None


class ControlTLS(_Model):
    server_name: str
    status: bool
    failure: str | None = None


class ControlHTTP(_Model):
    failure: str | None = None
    status_code: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    title: str | None = None
    body_length: int | None = None
    body_sha256: str | None = None
    # True when the control stopped reading at its body cap: its length then says nothing about the page.
    body_is_truncated: bool = False


class ControlObservations(_Model):
    dns: ControlDNS
    tcp_connect: dict[str, ControlTCP] = Field(default_factory=dict)  # "ip:port" -> result
    tls_handshake: dict[str, ControlTLS] = Field(default_factory=dict)  # "ip:port" -> result
    http_request: ControlHTTP


MAX_CONTROL_BATCH = 32
# The HTTP status POST /api/v1/control answers for each error a batch item can carry instead: a control
# failure reads the same (``http_429``, ...) whichever endpoint gave it.
CONTROL_ERROR_STATUS = {"invalid_input": 400, "rate_limited": 429, "control_timeout": 504}


class ControlBatchRequest(_Model):
    """Body of ``POST /api/v1/controls``: several controls asked at once."""

    requests: list[ControlRequest] = Field(min_length=1, max_length=MAX_CONTROL_BATCH)


class ControlBatchItem(_Model):
    """The answer to one request of a batch: its observations, or the error ``POST /api/v1/control``
    would have answered for it alone (``invalid_input``, ``rate_limited``, ``control_timeout``)."""

    input: str
    control: ControlObservations | None = None
    error: str | None = None
    detail: str | None = None
    retry_after: int | None = None  # seconds, with ``rate_limited``


class ControlBatchResponse(_Model):
    """Answer of ``POST /api/v1/controls``: one item per request, in the order asked."""

    results: list[ControlBatchItem]

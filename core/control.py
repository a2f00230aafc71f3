"""The control: what the same URL looks like from an uncensored vantage point.

The collector's ``POST /api/v1/control`` answers with a :class:`ControlObservations` (JSON), computed by
running the same probes from its own network and summarising them with
:func:`gatewatch.analysis.summarise`; the measurement keeps the control it was judged against. The
emulated network does the same from its clean vantage. Shapes follow OONI's web_connectivity test
helper. The requests (one, or a batch) are in :mod:`gatewatch.core.wire`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ControlDNS", "ControlHTTP", "ControlObservations", "ControlTCP", "ControlTLS"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

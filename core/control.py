"""The control: what the same URL looks like from an uncensored vantage point.

The collector's ``POST /api/v1/control`` answers with a :class:`ControlObservations` (JSON), computed by
running the same probes from its own network and summarising them with
:func:`gatewatch.analysis.summarise`; the measurement keeps the control it was judged against. The
emulated network does the same from its clean vantage. Shapes follow OONI's web_connectivity test
helper. The requests (one, or a batch) are in :mod:`gatewatch.core.wire`.

A control the collector **vouches for** is a :class:`VouchedControl`: the control's JSON text exactly as
the collector wrote it, the URL and the time it was measured, signed with one of the collector's
control-signing keys (Ed25519, rotated, published at ``GET /api/v1/control-keys``). The agent embeds it in
its measurement (``test_keys.control_vouch``); ingest judges only against a control it can authenticate,
so an agent cannot invent one.
"""

# No ``from __future__ import annotations``: pydantic reads every field's annotation when a model class is
# made, and one kept as text is compiled and evaluated first (issue 16: part of every agent's start).

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "VOUCHED_CONTROL_FORMAT",
    "ControlDNS",
    "ControlHTTP",
    "ControlObservations",
    "ControlTCP",
    "ControlTLS",
    "VOUCH_HEADER",
    "VouchedControl",
    "signed_control_bytes",
    "vouch_from_header",
    "vouch_header",
]

VOUCHED_CONTROL_FORMAT = "gatewatch-control/1"
# POST /api/v1/control answers with the control's JSON text as the body (as signed) and the signature here.
VOUCH_HEADER = "Gatewatch-Control-Signature"
# A control's JSON text is a few kilobytes (headers, addresses); this bounds what an upload may carry.
MAX_VOUCHED_CONTROL_CHARS = 64 * 1024


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


class VouchedControl(_Model):
    """A control signed by the collector: ``signature`` is Ed25519 over :meth:`signed_bytes`."""

    format: Literal["gatewatch-control/1"] = VOUCHED_CONTROL_FORMAT
    key_id: str = Field(max_length=64)  # which of the collector's control-signing keys
    input: str = Field(max_length=4096)  # the URL the control is of
    measured_at: datetime  # when the collector measured it (UTC)
    control: str = Field(max_length=MAX_VOUCHED_CONTROL_CHARS)  # ControlObservations JSON, as signed
    signature: str = Field(max_length=128)  # base64

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, in one canonical JSON text."""
        return signed_control_bytes(self.key_id, self.input, self.measured_at, self.control)

    def observations(self) -> ControlObservations:
        """The control itself (raises pydantic's ValidationError when the text is not one)."""
        return ControlObservations.model_validate_json(self.control)


def signed_control_bytes(key_id: str, url: str, measured_at: datetime, control: str) -> bytes:
    """The canonical bytes a control-signing key signs: (format, key id, URL, time, control text)."""
    body = {
        "format": VOUCHED_CONTROL_FORMAT,
        "key_id": key_id,
        "input": url,
        "measured_at": measured_at.isoformat(),
        "control": control,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def vouch_header(vouch: VouchedControl) -> str:
    """The ``Gatewatch-Control-Signature`` header of a single control's answer (its body is the control)."""
    return f"key_id={vouch.key_id}; measured_at={vouch.measured_at.isoformat()}; signature={vouch.signature}"


def vouch_from_header(header: str, url: str, body: str) -> VouchedControl:
    """The vouched control of a single control's answer: the header's signature over the body's text.

    Raises ValueError (pydantic's ValidationError is one) when the header is not one."""
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";") if "=" in part)
    return VouchedControl(
        key_id=fields.get("key_id", ""),
        input=url,
        measured_at=datetime.fromisoformat(fields.get("measured_at", "")),
        control=body,
        signature=fields.get("signature", ""),
    )

"""Every request and answer of the collector's HTTP API, as pydantic models: the one wire contract.

The collector answers with these models, the agent reads its answers with ``model_validate``, and the
OpenAPI document (``collector/openapi.py``) is generated from them. A change here is a change of the API:
regenerate ``docs/openapi.json`` (a test fails while it is stale).
"""

# No ``from __future__ import annotations``: pydantic reads every field's annotation when a model class is
# made, and one kept as text is compiled and evaluated first (issue 16: part of every agent's start).

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from .control import ControlObservations, VouchedControl
from .envelope import ENVELOPE_FORMAT, Envelope
from .measurement import ASN, ASN_RE, CC_RE, CountryCode, UTCDateTime
from .verdicts import Blocking, Verdict
from .vocabulary import (
    CONTROL_TIMEOUT,
    INVALID_INPUT,
    RATE_LIMITED,
    NetworkCondition,
    Scope,
    SightingRefusal,
)

__all__ = [
    "CONTROL_ERROR_STATUS",
    "MAX_CONTROL_BATCH",
    "MAX_PAGE_ROWS",
    "ControlBatchItem",
    "ControlBatchRequest",
    "ControlBatchResponse",
    "ConfirmationList",
    "ControlKey",
    "ControlKeys",
    "MAX_CONFIRM_LIST",
    "MAX_JUDGED_CONFIRMATIONS",
    "MAX_SIGHTING_BODY",
    "MAX_SIGHTING_URLS",
    "Sighting",
    "SightingAnswer",
    "SightingRejection",
    "ControlRequest",
    "ErrorBody",
    "Geolocation",
    "IngestItemResult",
    "IngestRequest",
    "IngestResponse",
    "IssuerKey",
    "IssuerKeysResponse",
    "MAX_TOKENS_PER_REQUEST",
    "TokenRequest",
    "TokenRequestBody",
    "TokenResponse",
    "BatchToken",
    "InterferenceNetwork",
    "InterferenceResponse",
    "InterferenceRow",
    "ItemStatus",
    "MeasurementPage",
    "MeasurementRow",
    "Status",
]


class _Model(BaseModel):
    # defer_build: a model's validator is built when it is first used, not at import, so a process pays
    # only for the wire models it speaks (the agent's `run` uses a few; start-up, issue 16).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# The measurement's types check these shapes in a validator, which JSON Schema cannot see: the document
# states them here (the patterns are the validators' own).
_Asn = Annotated[ASN, Field(json_schema_extra={"pattern": ASN_RE.pattern}, examples=["AS64501"])]
_Cc = Annotated[CountryCode, Field(json_schema_extra={"pattern": CC_RE.pattern}, examples=["XL"])]
# Serialised as text (``2026-11-23T13:40:00Z``), which the serializer's own schema only calls a string.
_Time = Annotated[
    UTCDateTime, Field(json_schema_extra={"format": "date-time"}, examples=["2026-11-23T13:40:00Z"])
]


class ErrorBody(_Model):
    """Every error: a short machine-readable reason and a sentence for people."""

    error: str
    detail: str


class Status(_Model):
    """``GET /healthz`` and ``GET /readyz``."""

    status: Literal["ok", "ready", "unavailable"]
    # Absent, never null, when there is nothing to say (so the document says neither null nor a default).
    detail: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=lambda s: s.pop("default"))


# --- POST /api/v1/measurements ---------------------------------------------------------------------------
class BatchToken(_Model):
    """The token a batch spends (issue 12): an issuer's blind signature over ``gatewatch-token/1 || epoch ||
    key_id || ephemeral_public_key``. Every envelope of the batch is signed by that ephemeral key (its
    ``public_key`` is the ephemeral key)."""

    epoch: int = Field(ge=0, lt=2**63)
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the issuer key's DER SPKI.")
    ephemeral_public_key: str = Field(max_length=64, description="Base64, raw 32-byte Ed25519 key.")
    token: str = Field(max_length=2048, description="Base64 of the 32-byte prefix and the RSA signature.")


class IngestRequest(_Model):
    __doc__ = (
        "A batch of signed measurements. Each envelope's format is "
        f"{ENVELOPE_FORMAT!r}; its payload is base64 of the Measurement's exact JSON bytes, its signature an "
        "Ed25519 signature over those bytes. With a token (the default mode), every envelope is signed by "
        "the token's ephemeral key; without one (identified mode, only where the collector accepts it), by "
        "the agent's long-term key."
    )

    measurements: list[Envelope]
    token: BatchToken | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=lambda s: s.pop("default")
    )


# --- GET /api/v1/issuer-keys -----------------------------------------------------------------------------
class IssuerKey(_Model):
    """One epoch's token issuer key. Published to everyone, and never withdrawn (old exports stay
    verifiable)."""

    epoch: int = Field(ge=0)
    key_id: str = Field(description="Hex SHA-256 of the DER SubjectPublicKeyInfo.")
    public_key: str = Field(description="Base64 of the DER SubjectPublicKeyInfo (RSA, 2048 bits or more).")
    valid_from: _Time = Field(description="The epoch's start: tokens are issued and spent from then.")
    issue_until: _Time = Field(description="The epoch's end: no token of this epoch is issued after it.")
    valid_until: _Time = Field(description="The epoch's end plus the overlap: the last time to spend.")


class IssuerKeysResponse(_Model):
    variant: str = Field(description="RFC 9474's name of the blind signature scheme.")
    current_epoch: int
    epoch_seconds: int
    keys: list[IssuerKey] = Field(description="Every key ever published, oldest epoch first.")


# --- POST /api/v1/tokens ---------------------------------------------------------------------------------
MAX_TOKENS_PER_REQUEST = 64


class TokenRequestBody(_Model):
    """What the agent signs with its long-term key to ask for tokens (carried as exact bytes)."""

    public_key: str = Field(max_length=64, description="Base64, the agent's raw 32-byte Ed25519 key.")
    epoch: int = Field(ge=0)
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    blinded_messages: list[str] = Field(min_length=1, max_length=MAX_TOKENS_PER_REQUEST)
    timestamp: _Time
    nonce: str = Field(min_length=16, max_length=64, description="Random, base64; never reused.")
    invite_code: str | None = Field(default=None, max_length=256)
    proof_of_work: str | None = Field(default=None, max_length=128)


class TokenRequest(_Model):
    """Body of ``POST /api/v1/tokens``: a :class:`TokenRequestBody` as base64 of its exact JSON bytes, and
    the agent's Ed25519 signature over those bytes."""

    request: str = Field(max_length=128 * 1024)
    signature: str = Field(max_length=128)


class TokenResponse(_Model):
    epoch: int
    key_id: str
    blind_signatures: list[str] = Field(description="Base64, one per blinded message, in order.")
    remaining: int = Field(ge=0, description="Tokens this key may still ask for in this epoch.")


ItemStatus = Literal["accepted", "duplicate", "rejected"]


class IngestItemResult(_Model):
    index: int = Field(ge=0, description="Position in the batch.")
    measurement_uid: str | None = Field(description="Null when the item could not be read that far.")
    status: ItemStatus
    reason: str | None = Field(
        description="Why an item was rejected (e.g. bad_signature, invalid_measurement, too_old); null "
        "otherwise."
    )


class IngestResponse(_Model):
    """One result per item, in the batch's order. A duplicate (same measurement_uid) is already stored:
    retrying is safe."""

    results: list[IngestItemResult]


# --- GET /api/v1/geolocate -------------------------------------------------------------------------------
class Geolocation(_Model):
    probe_asn: _Asn = Field(description="AS0 when unknown.")
    probe_cc: _Cc = Field(description="ZZ when unknown.")
    probe_network_name: str
    probe_ip: str = Field(
        repr=False,  # the volunteer's address: never in a log line or a traceback's locals
        description="The address the collector saw, echoed so that the agent can remove it from what it "
        "records. It is not logged or stored.",
    )


# --- POST /api/v1/control and /api/v1/controls ------------------------------------------------------------
class ControlRequest(_Model):
    """Body of ``POST /api/v1/control``."""

    input: str  # the URL
    # Addresses the probe resolved: the control also tries these, to tell DNS from TCP/IP blocking.
    addrs: list[str] = Field(default_factory=list, max_length=16)


MAX_CONTROL_BATCH = 32
# The HTTP status POST /api/v1/control answers for each error a batch item can carry instead: a control
# failure reads the same (``http_429``, ...) whichever endpoint gave it.
CONTROL_ERROR_STATUS = {INVALID_INPUT: 400, RATE_LIMITED: 429, CONTROL_TIMEOUT: 504}


class ControlBatchRequest(_Model):
    """Body of ``POST /api/v1/controls``: several controls asked at once."""

    requests: list[ControlRequest] = Field(min_length=1, max_length=MAX_CONTROL_BATCH)


class ControlBatchItem(_Model):
    """The answer to one request of a batch: its observations, or the error ``POST /api/v1/control``
    would have answered for it alone (``invalid_input``, ``rate_limited``, ``control_timeout``).

    ``vouch`` is the same control signed by the collector: the agent embeds it in its measurement
    (``test_keys.control_vouch``), and ingest judges only against a control it can authenticate."""

    input: str
    control: ControlObservations | None = None
    vouch: VouchedControl | None = None
    error: str | None = None
    detail: str | None = None
    retry_after: int | None = None  # seconds, with ``rate_limited``


class ControlBatchResponse(_Model):
    """Answer of ``POST /api/v1/controls``: one item per request, in the order asked."""

    results: list[ControlBatchItem]


# --- POST /api/v1/confirm (a sighting) -------------------------------------------------------------------
MAX_SIGHTING_URLS = 10  # URLs one sighting may name; also what the collector lists per country from them
MAX_JUDGED_CONFIRMATIONS = 20  # URLs GET /api/v1/confirm lists because of stored, judged anomalies
MAX_CONFIRM_LIST = MAX_JUDGED_CONFIRMATIONS + MAX_SIGHTING_URLS  # the most it lists: judged, then sighted
MAX_SIGHTING_BODY = 16 * 1024  # bytes: the collector refuses a larger body (413); the agent pads below it
_SightingUrl = Annotated[str, Field(min_length=1, max_length=1024)]


class Sighting(_Model):
    """Body of ``POST /api/v1/confirm``: test-list URLs a pass just found anomalous in the country, so that
    the country's agents confirm them at once while the measurements keep their upload delay.

    Nothing else: no measurement, key, token, signature or network, nothing that links it to a volunteer.
    The agent pads the body with JSON whitespace to a fixed size bucket (agent/sightings.py), so its length
    does not tell how many URLs it names."""

    cc: _Cc
    urls: list[_SightingUrl] = Field(min_length=1, max_length=MAX_SIGHTING_URLS)


class SightingRejection(_Model):
    """One URL of a sighting that was not listed, and why (``not_listed``, ``invalid_input``)."""

    url: str
    reason: SightingRefusal


class SightingAnswer(_Model):
    """Answer of ``POST /api/v1/confirm``: the URLs now listed for the country's agents, and the others."""

    accepted: list[str]
    rejected: list[SightingRejection] = Field(default_factory=list)


class ConfirmationList(_Model):
    """``GET /api/v1/confirm?cc=XL``: test-list URLs that just showed an anomaly somewhere in the country,
    for its agents to measure at once (nothing about who reported them)."""

    cc: _Cc
    urls: list[str]
    poll_seconds: int = Field(ge=1, description="Poll about this often (add jitter).")


class ControlKey(_Model):
    """One of the collector's control-signing keys (Ed25519), for the period it signs in."""

    key_id: str
    public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key")
    not_before: _Time
    not_after: _Time


class ControlKeys(_Model):
    """``GET /api/v1/control-keys``: the keys whose vouched controls ingest accepts, newest first."""

    current: str = Field(description="The key id controls are signed with now.")
    keys: list[ControlKey]


# --- GET /api/v1/measurements ----------------------------------------------------------------------------
class MeasurementRow(_Model):
    """A stored measurement and the verdict the server derived for it (never the agent's)."""

    measurement_uid: str
    measurement_start_time: _Time
    probe_cc: _Cc
    probe_asn: _Asn
    test_name: str
    input: str
    domain: str
    blocking: Blocking = Field(description="The server's verdict, as OONI web_connectivity spells it.")
    anomaly: bool
    technique: str | None
    fingerprint_key: str | None
    verdict: Verdict
    received_at: _Time = Field(
        description="When the collector received it, to the hour (the exact time stays in the store)."
    )
    flags: list[str] = Field(
        description="e.g. asn_mismatch: the claimed network disagreed with the upload's."
    )


MAX_PAGE_ROWS = 1000  # the most rows one page may hold (the listing's largest ``limit``)


class MeasurementPage(_Model):
    """Rows ordered by measurement_start_time, then measurement_uid."""

    results: list[MeasurementRow] = Field(max_length=MAX_PAGE_ROWS)
    next_cursor: str | None = Field(
        description="Pass as cursor, with the same filters, for the next page; null at the end."
    )


# --- GET /api/v1/interference ----------------------------------------------------------------------------
class InterferenceNetwork(_Model):
    """One network's state for a domain, within the attribution window."""

    asn: _Asn
    condition: NetworkCondition
    measurements: int = Field(ge=0)
    last_measured: _Time | None
    fingerprint_key: str | None
    technique: str | None


class InterferenceRow(_Model):
    """Whether interference with an input URL, or a domain, in a country is gateway-level (one chokepoint
    for every network) or confined to some networks, and on what evidence.

    A URL row (``input`` set) is attribution's own decision; a domain row (``input`` null) is its most
    serious URL's row (``decided_by``): a domain is interfered with when any of its URLs is."""

    cc: _Cc
    domain: str
    input: str | None = Field(description="The URL this row decides; null on a domain's roll-up.")
    decided_by: str | None = Field(
        description="The URL whose decision the row carries (on a domain row, its most serious URL)."
    )
    urls_measured: int = Field(ge=0, description="The domain's URLs measured in the window (a URL row: 1).")
    urls_affected: int = Field(
        ge=0, description="Of those, the URLs with gateway- or isp-level interference."
    )
    scope: Scope
    rule_id: str = Field(description="The attribution rule that decided.")
    evidence: str
    technique: str | None
    fingerprint_key: str | None
    networks_affected: int = Field(ge=0)
    networks_measured: int = Field(ge=0)
    first_seen: _Time | None
    last_seen: _Time | None
    example_measurement_uids: list[str]
    networks: list[InterferenceNetwork]
    # Left open for the localisation work (where on the path the tampering happens).
    packet_evidence: dict[str, Any] | None


class InterferenceResponse(_Model):
    results: list[InterferenceRow]

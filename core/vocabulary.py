"""The project's shared words, each defined once: everything else imports them and never re-spells them.

- ``blocking``: web_connectivity's verdict values, as models hold them (``False``, a layer, ``None``) and as
  the store, the exports and the metrics spell them (``"false"``, the layer, ``"null"``).
- techniques: the stable names a verdict's fingerprint gives to how the interference was done.
- flags: what the collector marks on a stored measurement.
- withheld network and country: OONI's ``AS0`` and ``ZZ``.
- reasons: the machine-readable reasons the collector's API answers with (its error bodies' ``error``, and
  an ingest item's ``reason``).

OONI's failure strings have their own home, :mod:`gatewatch.core.failures`.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

_IMPORTED = frozenset(globals())  # what the module holds before its first word: imports, dunders


# --- blocking --------------------------------------------------------------------------------------------
# The layer a web measurement found blocked (OONI web_connectivity's ``blocking``).
BlockingLayer = Literal["dns", "tcp_ip", "http-failure", "http-diff"]
BLOCKING_LAYERS: Final[tuple[str, ...]] = get_args(BlockingLayer)
# ``blocking`` flattened to text, as the store, the exports and the metrics spell it.
NOT_BLOCKED: Final = "false"
NO_VERDICT: Final = "null"  # no verdict (e.g. the control failed)
BLOCKING_LABELS: Final[tuple[str, ...]] = (NOT_BLOCKED, *BLOCKING_LAYERS, NO_VERDICT)


def blocking_label(blocking: object) -> str:
    """A verdict's ``blocking`` (``False``, a layer or ``None``) as text: ``false``, the layer, ``null``."""
    if blocking is False:
        return NOT_BLOCKED
    if blocking is None:
        return NO_VERDICT
    if blocking in BLOCKING_LAYERS:
        return str(blocking)
    raise ValueError(f"not a blocking value: {blocking!r}")


def blocking_value(label: str) -> BlockingLayer | Literal[False] | None:
    """The inverse of :func:`blocking_label`."""
    if label == NOT_BLOCKED:
        return False
    if label == NO_VERDICT:
        return None
    if label in BLOCKING_LAYERS:
        return label  # type: ignore[return-value]
    raise ValueError(f"not a blocking label: {label!r}")


# --- techniques ------------------------------------------------------------------------------------------
# How interference was done, as a verdict's fingerprint names it. Stable: dashboards, alert rules and
# researchers group by these, and the interference metrics take exactly this list as label values.
DNS_INJECTION: Final = "dns.injection"
DNS_FINGERPRINT: Final = "dns.fingerprint"  # an answer matching a known censor's DNS fingerprint
DNS_NXDOMAIN: Final = "dns.nxdomain"
DNS_SERVFAIL: Final = "dns.servfail"
DNS_REFUSED: Final = "dns.refused"
DNS_NO_ANSWER: Final = "dns.no_answer"
DNS_TIMEOUT: Final = "dns.timeout"
DNS_FAILURE: Final = "dns.failure"  # any other resolution failure
DNS_BOGON: Final = "dns.bogon"
DNS_INCONSISTENT: Final = "dns.inconsistent"
TCP_REFUSED: Final = "tcp.refused"
TCP_TIMEOUT: Final = "tcp.timeout"
TCP_RESET: Final = "tcp.reset"
TCP_HOST_UNREACHABLE: Final = "tcp.host_unreachable"
TCP_NETWORK_UNREACHABLE: Final = "tcp.network_unreachable"
TCP_FAILURE: Final = "tcp.failure"
TLS_RESET: Final = "tls.reset"
TLS_TIMEOUT: Final = "tls.timeout"
TLS_EOF: Final = "tls.eof"
TLS_INVALID_CERTIFICATE: Final = "tls.invalid_certificate"
TLS_FAILED_HANDSHAKE: Final = "tls.failed_handshake"
TLS_FAILURE: Final = "tls.failure"
HTTP_BLOCKPAGE: Final = "http.blockpage"
HTTP_DIFF: Final = "http.diff"
HTTP_FAILURE: Final = "http.failure"

TECHNIQUES: Final[tuple[str, ...]] = (
    DNS_INJECTION,
    DNS_FINGERPRINT,
    DNS_NXDOMAIN,
    DNS_SERVFAIL,
    DNS_REFUSED,
    DNS_NO_ANSWER,
    DNS_TIMEOUT,
    DNS_FAILURE,
    DNS_BOGON,
    DNS_INCONSISTENT,
    TCP_REFUSED,
    TCP_TIMEOUT,
    TCP_RESET,
    TCP_HOST_UNREACHABLE,
    TCP_NETWORK_UNREACHABLE,
    TCP_FAILURE,
    TLS_RESET,
    TLS_TIMEOUT,
    TLS_EOF,
    TLS_INVALID_CERTIFICATE,
    TLS_FAILED_HANDSHAKE,
    TLS_FAILURE,
    HTTP_BLOCKPAGE,
    HTTP_DIFF,
    HTTP_FAILURE,
)

# --- flags on a stored measurement ------------------------------------------------------------------------
ASN_MISMATCH: Final = "asn_mismatch"  # the claimed probe_asn contradicts where the upload came from
CC_MISMATCH: Final = "cc_mismatch"  # likewise the claimed probe_cc
ANALYSIS_ERROR: Final = "analysis_error"  # the analysis crashed: stored with blocking null
# Imported from OONI's published data (gatewatch-collector import-ooni): unsigned, no volunteer's key vouches
# for it, so signature checks skip it. Its payload also carries the annotation gatewatch_import.
OONI_IMPORT: Final = "ooni_import"
# no control the collector could authenticate (vouched, or its own): stored with blocking null
CONTROL_UNVERIFIED: Final = "control_unverified"
# Why ingest could not use a measurement's vouched control (collector/vouched_control.py): logged.
VouchRefusal = Literal["absent", "malformed", "unknown_key", "forged", "other_url", "too_old", "too_new"]
VOUCH_REFUSALS: Final[tuple[str, ...]] = get_args(VouchRefusal)
# Where the control a measurement was judged against came from: its own vouched control, the collector's own
# recent control of the URL, or none (no verdict). Counted in gatewatch_ingest_controls_total.
VouchSource = Literal["vouched", "own_cache", "none"]
VOUCH_SOURCES: Final[tuple[str, ...]] = get_args(VouchSource)
MISMATCH_FLAGS: Final = frozenset({ASN_MISMATCH, CC_MISMATCH})
FLAGS: Final[tuple[str, ...]] = (ASN_MISMATCH, CC_MISMATCH, ANALYSIS_ERROR, OONI_IMPORT, CONTROL_UNVERIFIED)

# --- attribution -----------------------------------------------------------------------------------------
# Where interference with a domain in a country happens: every network (the gateway), some (an ISP), none,
# or too few measurements to say.
Scope = Literal["gateway", "isp", "none", "insufficient-data"]
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
# One network's state for an input URL.
NetworkCondition = Literal["affected", "clean", "flapping"]
NETWORK_CONDITIONS: Final[tuple[str, ...]] = get_args(NetworkCondition)
# What an attribution row is about: each input URL (the unit decided), or a domain (rolled up from its URLs:
# interfered with when any of them is).
InterferenceUnit = Literal["domain", "url"]
INTERFERENCE_UNITS: Final[tuple[str, ...]] = get_args(InterferenceUnit)

# --- packet-level evidence (the agent's optional privileged trace step) -----------------------------------
# Which flow a trace re-sends: a DNS query, a TLS ClientHello, an HTTP request.
TraceTrigger = Literal["dns", "tls", "http"]
TRACE_TRIGGERS: Final[tuple[str, ...]] = get_args(TraceTrigger)
TRACE_DONE: Final = "traced"
TRACE_SKIPPED: Final = "skipped"
TRACE_FAILED: Final = "failed"
TraceStatus = Literal["traced", "skipped", "failed"]
# Why a trace was skipped.
NO_CAP_NET_RAW: Final = "no_cap_net_raw"  # the agent lacks CAP_NET_RAW (the systemd drop-in grants it)
TRACE_SKIP_REASONS: Final[tuple[str, ...]] = (NO_CAP_NET_RAW,)

# --- withheld network and country (OONI's spelling) -------------------------------------------------------
WITHHELD_ASN: Final = "AS0"  # also RFC 7607's reserved "no ASN": never one network
WITHHELD_CC: Final = "ZZ"

# --- the collector's reasons -------------------------------------------------------------------------------
# Why one item of an ingest batch was rejected (``IngestItemResult.reason``). The envelope's own checks
# (:class:`gatewatch.core.envelope.EnvelopeError`) come first.
UNSUPPORTED_FORMAT: Final = "unsupported_format"
BAD_PAYLOAD_ENCODING: Final = "bad_payload_encoding"
BAD_SIGNATURE_ENCODING: Final = "bad_signature_encoding"
BAD_PUBLIC_KEY_ENCODING: Final = "bad_public_key_encoding"
PAYLOAD_TOO_LARGE: Final = "payload_too_large"
BAD_PUBLIC_KEY: Final = "bad_public_key"
BAD_SIGNATURE: Final = "bad_signature"
INVALID_ENVELOPE: Final = "invalid_envelope"
INVALID_JSON: Final = "invalid_json"
INVALID_MEASUREMENT: Final = "invalid_measurement"
TOO_FAR_IN_FUTURE: Final = "too_far_in_future"
TOO_OLD: Final = "too_old"
UNSTORABLE: Final = "unstorable"
# The uid is already stored with a different payload: this measurement was never stored (only a
# byte-identical resend, a replay after a lost answer, is a ``duplicate``).
UID_CONFLICT: Final = "uid_conflict"
ITEM_REJECTIONS: Final[tuple[str, ...]] = (
    UNSUPPORTED_FORMAT,
    BAD_PAYLOAD_ENCODING,
    BAD_SIGNATURE_ENCODING,
    BAD_PUBLIC_KEY_ENCODING,
    PAYLOAD_TOO_LARGE,
    BAD_PUBLIC_KEY,
    BAD_SIGNATURE,
    INVALID_ENVELOPE,
    INVALID_JSON,
    INVALID_MEASUREMENT,
    TOO_FAR_IN_FUTURE,
    TOO_OLD,
    UNSTORABLE,
    UID_CONFLICT,
)

# A whole request refused (an error body's ``error``).
INVALID_REQUEST: Final = "invalid_request"
BATCH_TOO_LARGE: Final = "batch_too_large"
BODY_TOO_LARGE: Final = "body_too_large"
UNREADABLE_BODY: Final = "unreadable_body"  # the connection failed while the body was read
UNDECODABLE_BODY: Final = "undecodable_body"  # not in its Content-Encoding (not gzip, truncated, ...)
UNSUPPORTED_CONTENT_ENCODING: Final = "unsupported_content_encoding"
BODY_TIMEOUT: Final = "body_timeout"  # the body did not arrive in time
TOO_MANY_UPLOADS: Final = "too_many_uploads"  # the process is at its cap of concurrent uploads
MALFORMED_HTTP: Final = "malformed_http"  # the request itself is not HTTP the server can parse
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
RATE_LIMITED: Final = "rate_limited"
STORE_UNAVAILABLE: Final = "store_unavailable"
INVALID_INPUT: Final = "invalid_input"
CONTROL_TIMEOUT: Final = "control_timeout"
INVALID_CC: Final = "invalid_cc"
UNKNOWN_PARAMETER: Final = "unknown_parameter"
REPEATED_PARAMETER: Final = "repeated_parameter"
INVALID_PARAMETER: Final = "invalid_parameter"
INVALID_CURSOR: Final = "invalid_cursor"
NOT_FOUND: Final = "not_found"
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
INTERNAL_ERROR: Final = "internal_error"
# A sighting (POST /api/v1/confirm) none of whose URLs could be listed (each URL's own reason says why).
NOTHING_LISTABLE: Final = "nothing_listable"
REQUEST_ERRORS: Final[tuple[str, ...]] = (
    INVALID_JSON,
    INVALID_REQUEST,
    BATCH_TOO_LARGE,
    BODY_TOO_LARGE,
    UNREADABLE_BODY,
    UNDECODABLE_BODY,
    UNSUPPORTED_CONTENT_ENCODING,
    BODY_TIMEOUT,
    TOO_MANY_UPLOADS,
    MALFORMED_HTTP,
    UNSUPPORTED_MEDIA_TYPE,
    RATE_LIMITED,
    STORE_UNAVAILABLE,
    INVALID_INPUT,
    CONTROL_TIMEOUT,
    INVALID_CC,
    UNKNOWN_PARAMETER,
    REPEATED_PARAMETER,
    INVALID_PARAMETER,
    INVALID_CURSOR,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    INTERNAL_ERROR,
    NOTHING_LISTABLE,
)
# Besides these, an HTTP error aiohttp raises itself (an unknown path, a wrong method) is answered with its
# reason phrase in snake case (``not_found``, ``method_not_allowed``).
# Refusals of an ingest request that are about the batch's content: the agent narrows them down by
# halving the batch and quarantines a single item refused so. Others (rate_limited, ...) are retried.
CONTENT_REFUSALS: Final = frozenset({INVALID_JSON, INVALID_REQUEST, BATCH_TOO_LARGE, BODY_TOO_LARGE})
# Why one URL of a sighting was not listed for confirmation: not on the country's public test list, or not
# an http(s) URL with a host (``INVALID_INPUT``).
SightingRefusal = Literal["not_listed", "invalid_input"]
SIGHTING_REJECTIONS: Final[tuple[str, ...]] = get_args(SightingRefusal)
NOT_LISTED: Final = "not_listed"
# The errors one control of a batch can carry instead of its observations.
CONTROL_ERRORS: Final[tuple[str, ...]] = (INVALID_INPUT, RATE_LIMITED, CONTROL_TIMEOUT)

# --- unlinkable batches (issue 12) -------------------------------------------------------------------------
# Why a batch's token was refused as a whole (an error body's ``error``). The agent drops the batch's
# composition and token and makes a new batch, with a new token, of the same measurements (they are not to
# blame): nothing of a refused batch was stored.
FORGED_TOKEN: Final = "forged_token"  # the token does not verify under its epoch's published issuer key
WRONG_EPOCH: Final = "wrong_epoch"  # the token's epoch is neither current nor within the overlap
UNKNOWN_KEY: Final = "unknown_key"  # no published issuer key has this key id (for this epoch)
DOUBLE_SPEND: Final = "double_spend"  # the token was already spent on a different batch
TOKEN_REQUIRED: Final = "token_required"  # no token, and this collector does not accept identified batches
UNKNOWN_IDENTIFIED_KEY: Final = "unknown_identified_key"  # an identified batch from a key not listed
TOKEN_REFUSALS: Final = frozenset(
    {FORGED_TOKEN, WRONG_EPOCH, UNKNOWN_KEY, DOUBLE_SPEND, TOKEN_REQUIRED, UNKNOWN_IDENTIFIED_KEY}
)
# Not a refusal: the very batch already stored under this token was sent again (a resend after a lost
# answer or a crash). Its items are answered as usual (``duplicate`` for every stored one); the request is
# counted under this reason.
REPLAYED_BATCH: Final = "replayed_batch"
# Why ``POST /api/v1/tokens`` refused to issue.
BAD_TOKEN_REQUEST: Final = "bad_token_request"  # unreadable, badly signed, or stale (timestamp, nonce)
REPLAYED_REQUEST: Final = "replayed_request"  # this request's nonce was seen already
QUOTA_EXCEEDED: Final = "quota_exceeded"  # the key's tokens for this epoch are used up
ENROLMENT_REQUIRED: Final = "enrolment_required"  # the invite code or proof of work is missing or wrong
TOKEN_ERRORS: Final[tuple[str, ...]] = (
    BAD_TOKEN_REQUEST,
    REPLAYED_REQUEST,
    QUOTA_EXCEEDED,
    ENROLMENT_REQUIRED,
    WRONG_EPOCH,
    UNKNOWN_KEY,
)
# Enrolment policies of the token issuer (a collector setting).
ENROLMENT_OPEN: Final = "open"
ENROLMENT_INVITE: Final = "invite"
ENROLMENT_PROOF_OF_WORK: Final = "proof_of_work"
ENROLMENT_POLICIES: Final[tuple[str, ...]] = (ENROLMENT_OPEN, ENROLMENT_INVITE, ENROLMENT_PROOF_OF_WORK)
# How a stored measurement is signed (the exports' ``signature_scheme``).
SCHEME_LONGTERM: Final = "ed25519-longterm/1"  # the agent's long-term key (before issue 12; identified mode)
SCHEME_BLIND_TOKEN: Final = "blind-token/1"  # a per-batch ephemeral key certified by a blind-signed token
# Not signed at all: OONI measurements judged by ``gatewatch-collector import-ooni`` (flag ``ooni_import``).
SCHEME_UNSIGNED_IMPORT: Final = "ooni-import/1"
SIGNATURE_SCHEMES: Final[tuple[str, ...]] = (SCHEME_LONGTERM, SCHEME_BLIND_TOKEN, SCHEME_UNSIGNED_IMPORT)
# ``gatewatch-collector verify``: what an exported line states differs from the bytes that were signed.
PAYLOAD_MISMATCH: Final = "payload_mismatch"

# Every word above is public; listed here from the module itself so that a new one cannot be left out.
__all__ = sorted(name for name in globals() if name not in _IMPORTED and not name.startswith("_"))

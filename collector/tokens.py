"""``POST /api/v1/tokens``: blind-sign tokens for an agent that proves its long-term key.

The request is a :class:`~gatewatch.core.wire.TokenRequestBody` carried as exact bytes and signed by the
agent's long-term Ed25519 key; a fresh timestamp (within ``token_request_skew_seconds``) and a nonce never
seen before (remembered a day, in the store, by every collector) keep it from being replayed. Each key
may have ``token_quota`` tokens per epoch (the bound on what one agent can submit). New keys are let in by
the ``enrolment`` policy: ``open``, ``invite`` (a code from ``invite_codes``) or ``proof_of_work``
(``pow_bits`` leading zero bits of SHA-256 over the key and the agent's proof).

The issuer sees the long-term key and when it asks, but only blinded messages: it cannot tell which of its
signatures a spent token carries. Nothing here logs or stores the key itself (the quota is kept under a
hash of it, never joined to a measurement).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from datetime import datetime, timedelta

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from gatewatch.core import blindrsa
from gatewatch.core.vocabulary import (
    BAD_TOKEN_REQUEST,
    ENROLMENT_INVITE,
    ENROLMENT_OPEN,
    ENROLMENT_REQUIRED,
    QUOTA_EXCEEDED,
    REPLAYED_REQUEST,
    UNKNOWN_KEY,
    WRONG_EPOCH,
)
from gatewatch.core.wire import TokenRequest, TokenRequestBody, TokenResponse

from .appkeys import SETTINGS_KEY, STORE_KEY
from .issuer import ISSUER_KEY, EpochKey
from .metrics import TOKEN_METRICS_KEY
from .responses import error_response, model_response
from .store.base import IssuanceRefused

__all__ = [
    "POW_CONTEXT",
    "TOKENS_PATH",
    "TokenRefused",
    "add_token_routes",
    "proof_of_work_ok",
    "read_request",
]

TOKENS_PATH = "/api/v1/tokens"
POW_CONTEXT = b"gatewatch-pow/1"
log = logging.getLogger(__name__)
_STATUS = {
    BAD_TOKEN_REQUEST: 400,
    WRONG_EPOCH: 400,
    UNKNOWN_KEY: 400,
    ENROLMENT_REQUIRED: 403,
    REPLAYED_REQUEST: 409,
    QUOTA_EXCEEDED: 429,
}


class TokenRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def proof_of_work_ok(public_key: bytes, proof: str | None, bits: int) -> bool:
    """Whether SHA-256(``gatewatch-pow/1`` || key || proof) starts with ``bits`` zero bits."""
    if proof is None:
        return False
    digest = int.from_bytes(hashlib.sha256(POW_CONTEXT + public_key + proof.encode()).digest(), "big")
    return digest >> (256 - bits) == 0


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise TokenRefused(BAD_TOKEN_REQUEST, f"{what} is not base64") from None


def read_request(raw: bytes, now: datetime, skew: timedelta) -> tuple[TokenRequestBody, bytes]:
    """The signed request's body and the long-term public key, or :class:`TokenRefused`."""
    try:
        outer = TokenRequest.model_validate_json(raw)
    except ValidationError:
        raise TokenRefused(BAD_TOKEN_REQUEST, "expected {request, signature}") from None
    signed = _b64(outer.request, "request")
    try:
        body = TokenRequestBody.model_validate_json(signed)
    except ValidationError:
        raise TokenRefused(BAD_TOKEN_REQUEST, "the request is not a token request") from None
    public = _b64(body.public_key, "public_key")
    signature = _b64(outer.signature, "signature")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise TokenRefused(BAD_TOKEN_REQUEST, "the signature does not match the request") from None
    if abs(body.timestamp - now) > skew:
        raise TokenRefused(BAD_TOKEN_REQUEST, "the timestamp is not fresh (check the clock)")
    return body, public


def _enrols(request: web.Request, body: TokenRequestBody, public: bytes) -> bool:
    """Whether this request may enrol a new key (a known key needs no invite or proof again)."""
    settings = request.app[SETTINGS_KEY]
    if settings.enrolment == ENROLMENT_OPEN:
        return True
    if settings.enrolment == ENROLMENT_INVITE:
        return body.invite_code is not None and body.invite_code in settings.invite_codes
    return proof_of_work_ok(public, body.proof_of_work, settings.pow_bits)


def _blind_sign_all(key: EpochKey, blinded: list[bytes]) -> list[str]:
    assert key.private_key is not None
    return [base64.b64encode(blindrsa.blind_sign(key.private_key, m)).decode() for m in blinded]


async def _issue(request: web.Request) -> TokenResponse:
    settings = request.app[SETTINGS_KEY]
    issuer = request.app[ISSUER_KEY]
    now = issuer.clock()
    raw = await request.read()
    body, public = read_request(raw, now, timedelta(seconds=settings.token_request_skew_seconds))
    key = await issuer.signing_key(body.epoch)
    if key is None:
        raise TokenRefused(WRONG_EPOCH, f"tokens are issued for epochs {issuer.current_epoch()} and next")
    if key.key_id != body.key_id:
        raise TokenRefused(UNKNOWN_KEY, "not this epoch's published key")
    modulus_bytes = (key.public_key.key_size + 7) // 8
    blinded = [_b64(m, "blinded_messages") for m in body.blinded_messages]
    if any(len(m) != modulus_bytes for m in blinded):
        raise TokenRefused(BAD_TOKEN_REQUEST, f"each blinded message is {modulus_bytes} bytes")
    try:
        remaining = await request.app[STORE_KEY].charge_tokens(
            hashlib.sha256(public).digest(),
            body.epoch,
            len(blinded),
            settings.token_quota,
            _b64(body.nonce, "nonce"),
            _enrols(request, body, public),
            now,
        )
    except IssuanceRefused as refused:
        detail = f"{refused.remaining} tokens left in this epoch" if refused.reason == QUOTA_EXCEEDED else ""
        raise TokenRefused(refused.reason, detail or refused.reason) from None
    try:
        signatures = await asyncio.to_thread(_blind_sign_all, key, blinded)
    except blindrsa.SigningFaultError:
        # The private-key operation gave a wrong result (a fault): nothing is sent, and it is ours to fix.
        log.error("issuer signing fault", extra={"epoch": body.epoch})
        raise
    except blindrsa.BlindRSAError:
        raise TokenRefused(BAD_TOKEN_REQUEST, "a blinded message is out of range") from None
    return TokenResponse(
        epoch=body.epoch, key_id=key.key_id, blind_signatures=signatures, remaining=remaining
    )


async def handle_tokens(request: web.Request) -> web.Response:
    metrics = request.app[TOKEN_METRICS_KEY]
    if request.content_type != "application/json":
        metrics.requests.labels(result=BAD_TOKEN_REQUEST).inc()
        return error_response(400, BAD_TOKEN_REQUEST, "send application/json")
    try:
        answer = await _issue(request)
    except TokenRefused as refused:
        metrics.requests.labels(result=refused.reason).inc()
        headers = {"Retry-After": "3600"} if refused.reason == QUOTA_EXCEEDED else None
        return error_response(_STATUS[refused.reason], refused.reason, refused.detail, headers)
    metrics.requests.labels(result="ok").inc()
    metrics.issued.inc(len(answer.blind_signatures))
    return model_response(answer)


def add_token_routes(app: web.Application) -> None:
    app.router.add_post(TOKENS_PATH, handle_tokens)

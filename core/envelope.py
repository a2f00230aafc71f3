"""The signed envelope: a measurement's exact JSON bytes, an Ed25519 signature over them, the public key.

The bytes are carried verbatim (base64) so that nobody re-serialises between signing and verifying: the
collector stores the same bytes, and anyone can re-verify an exported measurement later. Verification sits
behind :func:`verify` alone, so that unlinkable tokens can replace the long-term key in one place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field

from . import vocabulary as V

__all__ = ["Envelope", "EnvelopeError", "key_fingerprint", "public_key_bytes", "sign", "verify"]

ENVELOPE_FORMAT = "gatewatch-envelope/1"
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


class EnvelopeError(ValueError):
    """The envelope cannot be trusted. ``reason`` is a short machine-readable string (the submitter's
    fault: maps to a rejection, never a server error)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = ENVELOPE_FORMAT
    payload: str = Field(max_length=MAX_PAYLOAD_BYTES * 4 // 3 + 4)  # base64 of the measurement JSON
    signature: str = Field(max_length=128)  # base64, 64 bytes
    public_key: str = Field(max_length=64)  # base64, raw 32-byte Ed25519 key


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(public_key: bytes) -> str:
    """Short, human-comparable id of a public key (shown to the volunteer; never a metric label)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def sign(payload: bytes, key: Ed25519PrivateKey) -> Envelope:
    return Envelope(
        payload=base64.b64encode(payload).decode(),
        signature=base64.b64encode(key.sign(payload)).decode(),
        public_key=base64.b64encode(public_key_bytes(key)).decode(),
    )


_BAD_ENCODING = {
    "payload": V.BAD_PAYLOAD_ENCODING,
    "signature": V.BAD_SIGNATURE_ENCODING,
    "public_key": V.BAD_PUBLIC_KEY_ENCODING,
}


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EnvelopeError(_BAD_ENCODING[what], str(exc)) from None


def verify(envelope: Envelope) -> tuple[bytes, bytes]:
    """Check the signature; return ``(payload bytes, public key bytes)`` or raise :class:`EnvelopeError`."""
    if envelope.format != ENVELOPE_FORMAT:
        raise EnvelopeError(V.UNSUPPORTED_FORMAT, envelope.format[:64])
    payload = _b64(envelope.payload, "payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EnvelopeError(V.PAYLOAD_TOO_LARGE)
    signature = _b64(envelope.signature, "signature")
    public = _b64(envelope.public_key, "public_key")
    if len(public) != 32:
        raise EnvelopeError(V.BAD_PUBLIC_KEY, "expected 32 bytes")
    if len(signature) != 64:
        raise EnvelopeError(V.BAD_SIGNATURE, "expected 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, payload)
    except InvalidSignature:
        raise EnvelopeError(V.BAD_SIGNATURE, "signature does not match payload") from None
    except ValueError as exc:
        raise EnvelopeError(V.BAD_PUBLIC_KEY, str(exc)) from None
    return payload, public

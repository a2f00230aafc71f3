"""The unlinkable batch token (issue 12): what the issuer blind-signs, and how anyone checks it.

A token is an RSA blind signature (RFC 9474, RSABSSA-SHA384-PSS-Randomized) by the collector's issuer key
of one epoch over a message that binds that epoch, that key and a fresh Ed25519 public key the agent made
for one upload batch::

    b"gatewatch-token/1" || epoch (8 bytes, big-endian) || key_id (32 bytes) || ephemeral public key (32)

The randomized variant prefixes the message with 32 random bytes before signing; the prefix travels with
the signature (``token = prefix || signature``). The issuer saw only a blinded form, so it cannot tell
which issuance a spent token came from; anyone with the published key can verify it, offline.

Epochs are weeks counted from the Unix epoch (epoch ``n`` starts at ``n * 604800`` seconds UTC, a
Thursday 00:00). A token of epoch ``n`` is spendable from the start of ``n`` until ``overlap`` seconds
after its end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from . import blindrsa
from . import vocabulary as V

__all__ = [
    "EPOCH_SECONDS",
    "PREFIX_BYTES",
    "TOKEN_CONTEXT",
    "BatchTokenError",
    "TokenParts",
    "epoch_end",
    "epoch_of",
    "epoch_start",
    "spendable",
    "token_message",
    "verify_token",
]

TOKEN_CONTEXT = b"gatewatch-token/1"
EPOCH_SECONDS = 7 * 24 * 3600
PREFIX_BYTES = 32  # the randomized variant's message prefix
_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


class BatchTokenError(ValueError):
    """The token cannot be trusted; ``reason`` is one of the vocabulary's token refusals."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def epoch_of(when: datetime) -> int:
    return int((when - _EPOCH_ZERO) // timedelta(seconds=EPOCH_SECONDS))


def epoch_start(epoch: int) -> datetime:
    return _EPOCH_ZERO + timedelta(seconds=epoch * EPOCH_SECONDS)


def epoch_end(epoch: int) -> datetime:
    return epoch_start(epoch + 1)


def spendable(epoch: int, when: datetime, overlap: timedelta) -> bool:
    """Whether a token of ``epoch`` may be spent at ``when``: within the epoch or its overlap after."""
    return epoch_start(epoch) <= when < epoch_end(epoch) + overlap


def token_message(epoch: int, key_id: str, ephemeral_public_key: bytes) -> bytes:
    """The message a token signs (before the randomized variant's prefix)."""
    if not 0 <= epoch < 2**63:
        raise ValueError("epoch out of range")
    key = bytes.fromhex(key_id)
    if len(key) != 32 or len(ephemeral_public_key) != 32:
        raise ValueError("key_id must be 32 bytes (hex) and the ephemeral key 32 bytes")
    return TOKEN_CONTEXT + epoch.to_bytes(8, "big") + key + ephemeral_public_key


@dataclass(frozen=True)
class TokenParts:
    """A token as carried on the wire and in exports, decoded."""

    epoch: int
    key_id: str  # hex sha256 of the issuer key's DER SubjectPublicKeyInfo
    ephemeral_public_key: bytes  # raw 32-byte Ed25519 key
    token: bytes  # prefix || RSA signature

    @classmethod
    def decode(cls, epoch: int, key_id: str, ephemeral_b64: str, token_b64: str) -> TokenParts:
        try:
            ephemeral = base64.b64decode(ephemeral_b64.encode("ascii"), validate=True)
            token = base64.b64decode(token_b64.encode("ascii"), validate=True)
            bytes.fromhex(key_id)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise BatchTokenError(V.FORGED_TOKEN, f"not base64/hex: {exc}") from None
        if len(ephemeral) != 32 or len(key_id) != 64 or len(token) <= PREFIX_BYTES:
            raise BatchTokenError(V.FORGED_TOKEN, "wrong length")
        return cls(epoch, key_id.lower(), ephemeral, token)

    @property
    def prepared_message(self) -> bytes:
        return self.token[:PREFIX_BYTES] + token_message(self.epoch, self.key_id, self.ephemeral_public_key)

    @property
    def signature(self) -> bytes:
        return self.token[PREFIX_BYTES:]

    @property
    def spent_id(self) -> bytes:
        """What the spent-token table is keyed on: the whole signed message (one signature per message)."""
        return hashlib.sha256(self.key_id.encode() + self.prepared_message).digest()

    def ephemeral_b64(self) -> str:
        return base64.b64encode(self.ephemeral_public_key).decode()

    def token_b64(self) -> str:
        return base64.b64encode(self.token).decode()


def verify_token(parts: TokenParts, issuer_public_key: RSAPublicKey) -> None:
    """Raise :class:`BatchTokenError` (``forged_token``) unless the token verifies under the issuer key.
    Which key belongs to which epoch, and whether the epoch is current, is the caller's to check."""
    if blindrsa.key_id(issuer_public_key) != parts.key_id:
        raise BatchTokenError(V.UNKNOWN_KEY, "the key id is not this key's")
    try:
        blindrsa.verify(issuer_public_key, parts.prepared_message, parts.signature)
    except blindrsa.BlindRSAError:
        raise BatchTokenError(V.FORGED_TOKEN, "the token does not verify") from None

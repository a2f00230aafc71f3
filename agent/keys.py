"""The agent's Ed25519 signing key: created once at ``init``, kept owner-readable only (0600).

The key links an agent's measurements to each other (so the collector can rate-limit and spot a
misbehaving agent) but to nothing else: it is random, not derived from the machine.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gatewatch.core.envelope import key_fingerprint, public_key_bytes

__all__ = ["SigningKeyError", "fingerprint", "load_key", "load_or_create_key"]


class SigningKeyError(RuntimeError):
    """The key file is missing, unreadable or not an Ed25519 key."""


# What `init` writes: an unencrypted PKCS#8 Ed25519 key, whose DER is this fixed prefix and the 32-byte
# seed (RFC 8410). Read directly, it spares OpenSSL's general key decoder, which costs the agent ~0.4 MiB
# of memory (issue 4); any other form still goes through that decoder.
_PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN, _PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def _ed25519_from_pkcs8_pem(pem: bytes) -> Ed25519PrivateKey | None:
    body = pem.strip()
    if not (body.startswith(_PEM_BEGIN) and body.endswith(_PEM_END)):
        return None
    try:
        der = base64.b64decode(b"".join(body[len(_PEM_BEGIN) : -len(_PEM_END)].split()), validate=True)
    except binascii.Error:
        return None
    if len(der) != len(_PKCS8_ED25519_PREFIX) + 32 or not der.startswith(_PKCS8_ED25519_PREFIX):
        return None
    return Ed25519PrivateKey.from_private_bytes(der[len(_PKCS8_ED25519_PREFIX) :])


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
        key = _ed25519_from_pkcs8_pem(pem) or load_pem_private_key(pem, password=None)
    except FileNotFoundError:
        raise SigningKeyError(f"no signing key at {path}: run `gatewatch-agent init` first") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the key, or create it with mode 0600 from the first byte (never world-readable, not even
    briefly: the file is opened with O_EXCL and that mode)."""
    if path.exists():
        return load_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def fingerprint(key: Ed25519PrivateKey) -> str:
    return key_fingerprint(public_key_bytes(key))

"""The agent's Ed25519 signing key: created once at ``init``, kept owner-readable only (0600).

The key links an agent's measurements to each other (so the collector can rate-limit and spot a
misbehaving agent) but to nothing else: it is random, not derived from the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gatewatch.probes.envelope import key_fingerprint, public_key_bytes

__all__ = ["SigningKeyError", "fingerprint", "load_key", "load_or_create_key"]


class SigningKeyError(RuntimeError):
    """The key file is missing, unreadable or not an Ed25519 key."""


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
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

"""The signed envelope carries exact bytes; any change to bytes, key or signature is caught."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.core import envelope
from gatewatch.core.envelope import Envelope, EnvelopeError


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_sign_then_verify_returns_the_exact_bytes(key: Ed25519PrivateKey) -> None:
    payload = b'{"b": 1, "a": 2}'  # key order and spacing preserved: no re-serialisation
    payload_back, public = envelope.verify(envelope.sign(payload, key))
    assert payload_back == payload
    assert public == envelope.public_key_bytes(key)


def _tamper(env: Envelope, **changes: str) -> Envelope:
    return env.model_copy(update=changes)


def test_changed_payload_is_refused(key: Ed25519PrivateKey) -> None:
    env = envelope.sign(b"{}", key)
    with pytest.raises(EnvelopeError) as err:
        envelope.verify(_tamper(env, payload=base64.b64encode(b"{ }").decode()))
    assert err.value.reason == "bad_signature"


def test_other_key_is_refused(key: Ed25519PrivateKey) -> None:
    env = envelope.sign(b"{}", key)
    other = envelope.public_key_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(EnvelopeError, match="bad_signature"):
        envelope.verify(_tamper(env, public_key=base64.b64encode(other).decode()))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("payload", "not base64!", "bad_payload_encoding"),
        ("signature", "AAAA", "bad_signature"),
        ("public_key", base64.b64encode(b"short").decode(), "bad_public_key"),
        ("format", "other/9", "unsupported_format"),
        ("signature", "é", "bad_signature_encoding"),
    ],
)
def test_malformed_fields_have_reasons(key: Ed25519PrivateKey, field: str, value: str, reason: str) -> None:
    env = _tamper(envelope.sign(b"{}", key), **{field: value})
    with pytest.raises(EnvelopeError) as err:
        envelope.verify(env)
    assert err.value.reason == reason


def test_key_fingerprint_is_short_and_stable(key: Ed25519PrivateKey) -> None:
    public = envelope.public_key_bytes(key)
    assert envelope.key_fingerprint(public) == envelope.key_fingerprint(public)
    assert len(envelope.key_fingerprint(public)) == 16

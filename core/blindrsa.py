"""RSA blind signatures (RFC 9474), RSABSSA-SHA384-PSS-Randomized by default, and the other three variants.

The client *prepares* a message (a 32-byte random prefix in the randomized variants), *blinds* it under
the issuer's public key, the issuer *blind-signs* what it cannot read, and the client *finalizes*: it
unblinds the answer into an ordinary RSASSA-PSS signature (SHA-384, MGF1-SHA-384) over the prepared
message, which anyone verifies with :func:`verify` and the public key alone. The issuer never sees the
message or the final signature, so it cannot link a signature it issued to the request it came from.

Built on ``cryptography`` (key generation, parsing, the final PSS verification) and Python integers for
what ``cryptography`` does not expose: EMSA-PSS encoding (RFC 8017 §9.1.1, with MGF1), blinding,
the raw private operation and unblinding.

The issuer's private operation runs on attacker-chosen input, so :func:`blind_sign`
 - refuses input that is not exactly the modulus length or not below the modulus;
 - blinds the base (multiplies by a fresh ``b**e``, unblinds by ``b**-1``) and the CRT exponents (adds a
   fresh random multiple of ``p - 1`` and ``q - 1``), so that no two private operations on the same input
   compute on the same numbers;
 - checks ``s**e == m (mod n)`` before returning anything (RFC 9474's guard against fault attacks: one
   faulty CRT half would otherwise hand the caller a factor of ``n``), raising :class:`SigningFaultError`.

Constant time: **this module is not constant-time**. Python integers are variable-length and CPython's
``pow``, multiplication, ``%`` and modular inverse take time that depends on the values (their length,
the exponent's bits, the steps of Euclid's algorithm), and the numbers stay in memory until the garbage
collector frees them (never wiped). Where that matters and what stands in for it:
 - issuer, :func:`blind_sign`: the exponentiations with the secret CRT exponents. Base and exponent
   blinding make each call's timing depend on fresh random numbers rather than on the attacker's input
   alone; they reduce, but do not remove, what a timing observer can learn about the key.
 - client, :func:`blind`: ``pow(r, -1, n)`` and the products with the secret blinding factor ``r``
   (unlinkability rests on ``r``). Only an observer timing the volunteer's own process could use this.
 - everywhere: ``bytes``/``int`` conversions and the equality checks of the fault guard.
The final signature check is ``cryptography``'s (OpenSSL's) and works on public values only.
"""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

__all__ = [
    "MIN_KEY_BITS",
    "PREFIX_LENGTH",
    "PUBLIC_EXPONENT",
    "RSABSSA_SHA384_PSSZERO_DETERMINISTIC",
    "RSABSSA_SHA384_PSSZERO_RANDOMIZED",
    "RSABSSA_SHA384_PSS_DETERMINISTIC",
    "RSABSSA_SHA384_PSS_RANDOMIZED",
    "VARIANTS",
    "BlindRSAError",
    "SigningFaultError",
    "Variant",
    "blind",
    "blind_sign",
    "finalize",
    "generate_issuer_key",
    "key_id",
    "prepare",
    "public_key_from_spki",
    "public_key_to_spki",
    "verify",
]

MIN_KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
PREFIX_LENGTH = 32  # the random msg_prefix of the randomized variants (RFC 9474 §4.1)
_HASH_LENGTH = 48  # SHA-384
# Extra bits of the random multiple of p-1 (q-1) added to each CRT exponent per private operation.
_EXPONENT_BLINDING_BITS = 64


class BlindRSAError(ValueError):
    """A blind-signature step failed: wrong length, value out of range, not invertible, bad signature, a
    key too weak or malformed. Raised for bad input (the caller's fault) and for a signing fault."""


class SigningFaultError(BlindRSAError):
    """The issuer's own private operation produced a wrong result (a hardware or software fault); nothing
    was returned. The issuer's fault, not the requester's."""


@dataclass(frozen=True)
class Variant:
    """One RFC 9474 variant: SHA-384 for the hash and MGF1 always; the PSS salt length and whether a
    random prefix is prepended to the message."""

    name: str
    salt_length: int
    randomized: bool


RSABSSA_SHA384_PSS_RANDOMIZED = Variant("RSABSSA-SHA384-PSS-Randomized", _HASH_LENGTH, True)
RSABSSA_SHA384_PSSZERO_RANDOMIZED = Variant("RSABSSA-SHA384-PSSZERO-Randomized", 0, True)
RSABSSA_SHA384_PSS_DETERMINISTIC = Variant("RSABSSA-SHA384-PSS-Deterministic", _HASH_LENGTH, False)
RSABSSA_SHA384_PSSZERO_DETERMINISTIC = Variant("RSABSSA-SHA384-PSSZERO-Deterministic", 0, False)
VARIANTS: tuple[Variant, ...] = (
    RSABSSA_SHA384_PSS_RANDOMIZED,
    RSABSSA_SHA384_PSSZERO_RANDOMIZED,
    RSABSSA_SHA384_PSS_DETERMINISTIC,
    RSABSSA_SHA384_PSSZERO_DETERMINISTIC,
)

# --- keys ----------------------------------------------------------------------------------------------

# AlgorithmIdentifier of id-RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48 (RFC 4055, RFC 5756),
# hash parameters encoded as NULL: the exact bytes of RFC 9578's issuer keys (token type 0x0002) and of
# the CA/Browser Forum's profile. The key declares that it is for PSS with SHA-384 only.
_PSS_SHA384_ALGORITHM = bytes.fromhex(
    "304106092a864886f70d01010a3034a00f300d06096086480165030402020500"
    "a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130"
)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _check_strength(public_key: RSAPublicKey) -> None:
    """Issuer keys are at least 2048 bits with e = 65537: nothing else is made by this module, and an
    unusual exponent is one of the ways a malicious issuer key could leak what blinding should hide."""
    if public_key.key_size < MIN_KEY_BITS:
        raise BlindRSAError(f"RSA key of {public_key.key_size} bits: at least {MIN_KEY_BITS} required")
    if public_key.public_numbers().e != PUBLIC_EXPONENT:
        raise BlindRSAError(f"RSA public exponent other than {PUBLIC_EXPONENT}")


def generate_issuer_key(bits: int = 2048) -> RSAPrivateKey:
    """A fresh issuer key (e = 65537). Refuses fewer than 2048 bits."""
    if bits < MIN_KEY_BITS:
        raise BlindRSAError(f"{bits}-bit issuer key refused: at least {MIN_KEY_BITS} bits")
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)


def public_key_to_spki(public_key: RSAPublicKey) -> bytes:
    """DER SubjectPublicKeyInfo in RFC 9578's form: the id-RSASSA-PSS algorithm identifier (SHA-384,
    MGF1-SHA-384, salt 48) around the PKCS#1 RSAPublicKey. One canonical encoding per key."""
    _check_strength(public_key)
    pkcs1 = public_key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    return _der(0x30, _PSS_SHA384_ALGORITHM + _der(0x03, b"\x00" + pkcs1))


def public_key_from_spki(data: bytes) -> RSAPublicKey:
    """Parse :func:`public_key_to_spki`'s form, and only that form (anything else, trailing bytes
    included, raises :class:`BlindRSAError`), so that one key has one encoding and one :func:`key_id`."""
    try:
        public_key = load_der_public_key(bytes(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BlindRSAError(f"not a DER SubjectPublicKeyInfo: {exc}") from None
    if not isinstance(public_key, RSAPublicKey):
        raise BlindRSAError("not an RSA public key")
    if public_key_to_spki(public_key) != data:
        raise BlindRSAError("not the id-RSASSA-PSS (SHA-384, salt 48) SubjectPublicKeyInfo encoding")
    return public_key


def key_id(public_key: RSAPublicKey) -> str:
    """Hex SHA-256 of the key's DER SubjectPublicKeyInfo (:func:`public_key_to_spki`): the same value as
    Privacy Pass's ``token_key_id`` for the same key."""
    return hashlib.sha256(public_key_to_spki(public_key)).hexdigest()


# --- encoding helpers ----------------------------------------------------------------------------------


def _modulus_length(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _to_int(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _to_bytes(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _mgf1_sha384(seed: bytes, mask_length: int) -> bytes:
    """MGF1 with SHA-384 (RFC 8017 §B.2.1)."""
    blocks = (mask_length + _HASH_LENGTH - 1) // _HASH_LENGTH
    mask = b"".join(hashlib.sha384(seed + counter.to_bytes(4, "big")).digest() for counter in range(blocks))
    return mask[:mask_length]


def _emsa_pss_encode(message: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with SHA-384 and MGF1-SHA-384; ``em_bits`` = modulus bits - 1."""
    em_length = (em_bits + 7) // 8
    if em_length < _HASH_LENGTH + len(salt) + 2:
        raise BlindRSAError("encoding error: modulus too short for SHA-384 and this salt")
    m_hash = hashlib.sha384(message).digest()
    h = hashlib.sha384(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_length - len(salt) - _HASH_LENGTH - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, em_length - _HASH_LENGTH - 1), strict=True))
    masked[0] &= 0xFF >> (8 * em_length - em_bits)
    return bytes(masked) + h + b"\xbc"


# --- client --------------------------------------------------------------------------------------------


def _prepare(message: bytes, variant: Variant, msg_prefix: bytes) -> bytes:
    if not variant.randomized:
        if msg_prefix:
            raise BlindRSAError(f"{variant.name} takes no message prefix")
        return bytes(message)
    if len(msg_prefix) != PREFIX_LENGTH:
        raise BlindRSAError(f"message prefix of {len(msg_prefix)} bytes, {PREFIX_LENGTH} expected")
    return bytes(msg_prefix) + bytes(message)


def prepare(msg: bytes, variant: Variant = RSABSSA_SHA384_PSS_RANDOMIZED) -> bytes:
    """The message to blind, sign and verify: ``msg`` behind 32 fresh random bytes in the randomized
    variants (so that no message is easy to guess, even under a maliciously made issuer key: RFC 9474's
    "message entropy" advice), ``msg`` itself in the deterministic ones."""
    return _prepare(msg, variant, secrets.token_bytes(PREFIX_LENGTH) if variant.randomized else b"")


def _blind(
    public_key: RSAPublicKey, prepared_msg: bytes, variant: Variant, *, salt: bytes, r: int
) -> tuple[bytes, bytes]:
    _check_strength(public_key)
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    if len(salt) != variant.salt_length:
        raise BlindRSAError(f"salt of {len(salt)} bytes, {variant.salt_length} expected")
    m = _to_int(_emsa_pss_encode(prepared_msg, n.bit_length() - 1, salt))
    if math.gcd(m, n) != 1:
        raise BlindRSAError("invalid input: encoded message not invertible modulo n")
    if not 1 <= r < n:
        raise BlindRSAError("blinding factor out of range")
    try:
        inv = pow(r, -1, n)
    except ValueError:
        raise BlindRSAError("invalid blind: blinding factor not invertible modulo n") from None
    z = m * pow(r, e, n) % n
    k = _modulus_length(n)
    return _to_bytes(z, k), _to_bytes(inv, k)


def blind(
    pk: RSAPublicKey, prepared_msg: bytes, variant: Variant = RSABSSA_SHA384_PSS_RANDOMIZED
) -> tuple[bytes, bytes]:
    """Blind a prepared message: ``(blinded_msg, inv)``, both of the modulus length. Send ``blinded_msg``
    to the issuer; keep ``inv`` secret until :func:`finalize` (it unlinks the result from the request)."""
    n = pk.public_numbers().n
    return _blind(
        pk,
        prepared_msg,
        variant,
        salt=secrets.token_bytes(variant.salt_length),
        r=secrets.randbelow(n - 1) + 1,
    )


# --- issuer --------------------------------------------------------------------------------------------

# A private operation: (private numbers, input) -> input ** d mod n. A parameter of _blind_sign so that a
# test can stand in a faulty one and watch the guard refuse it.
_PrivateOperation = Callable[[rsa.RSAPrivateNumbers, int], int]


def _rsa_private_blinded(numbers: rsa.RSAPrivateNumbers, m: int) -> int:
    """``m ** d mod n`` by CRT, with base blinding (``m * b**e``, then ``* b**-1``) and exponent blinding
    (``dp + k_p (p - 1)``, ``dq + k_q (q - 1)`` with fresh random ``k``)."""
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    p, q = numbers.p, numbers.q
    b = secrets.randbelow(n - 2) + 2
    try:
        b_inv = pow(b, -1, n)
    except ValueError:  # b shares a factor with n: never in practice (probability about 2 / sqrt(n))
        raise SigningFaultError("blinding factor not invertible") from None
    c = m * pow(b, e, n) % n
    dp = numbers.dmp1 + secrets.randbits(_EXPONENT_BLINDING_BITS) * (p - 1)
    dq = numbers.dmq1 + secrets.randbits(_EXPONENT_BLINDING_BITS) * (q - 1)
    sp = pow(c % p, dp, p)
    sq = pow(c % q, dq, q)
    s = sq + (numbers.iqmp * (sp - sq) % p) * q
    return s * b_inv % n


def _blind_sign(
    sk: RSAPrivateKey, blinded_msg: bytes, *, private_operation: _PrivateOperation = _rsa_private_blinded
) -> bytes:
    _check_strength(sk.public_key())
    numbers = sk.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    k = _modulus_length(n)
    if len(blinded_msg) != k:
        raise BlindRSAError(f"blinded message of {len(blinded_msg)} bytes, {k} expected")
    m = _to_int(blinded_msg)
    if m >= n:
        raise BlindRSAError("message representative out of range")
    s = private_operation(numbers, m)
    if not 0 <= s < n or pow(s, e, n) != m:
        raise SigningFaultError("signing failure: the private operation's result does not verify")
    return _to_bytes(s, k)


def blind_sign(sk: RSAPrivateKey, blinded_msg: bytes) -> bytes:
    """The issuer's step: RSA-sign a blinded message it cannot read. Raises :class:`BlindRSAError` for
    input of the wrong length or not below the modulus, :class:`SigningFaultError` if its own result does
    not verify (nothing is returned then)."""
    return _blind_sign(sk, blinded_msg)


# --- client, after issuance; anyone ----------------------------------------------------------------------


def finalize(
    pk: RSAPublicKey,
    prepared_msg: bytes,
    blind_sig: bytes,
    inv: bytes,
    variant: Variant = RSABSSA_SHA384_PSS_RANDOMIZED,
) -> bytes:
    """Unblind the issuer's answer into the signature over ``prepared_msg`` and verify it (raises
    :class:`BlindRSAError` if it does not verify: the issuer signed something else, or with another key)."""
    _check_strength(pk)
    n = pk.public_numbers().n
    k = _modulus_length(n)
    if len(blind_sig) != k or len(inv) != k:
        raise BlindRSAError(f"blind signature and inverse must be {k} bytes")
    z, r_inv = _to_int(blind_sig), _to_int(inv)
    if z >= n or r_inv >= n:
        raise BlindRSAError("blind signature or inverse out of range")
    sig = _to_bytes(z * r_inv % n, k)
    verify(pk, prepared_msg, sig, variant)
    return sig


_SHA384 = hashes.SHA384()


@functools.cache
def _pss_padding(salt_length: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(_SHA384), salt_length=salt_length)


def verify(
    pk: RSAPublicKey, prepared_msg: bytes, signature: bytes, variant: Variant = RSABSSA_SHA384_PSS_RANDOMIZED
) -> None:
    """Check an ordinary RSASSA-PSS signature (SHA-384, MGF1-SHA-384, the variant's salt length) over the
    prepared message; raises :class:`BlindRSAError` when it does not verify."""
    _check_strength(pk)
    try:
        pk.verify(bytes(signature), bytes(prepared_msg), _pss_padding(variant.salt_length), _SHA384)
    except InvalidSignature:
        raise BlindRSAError("signature does not verify") from None

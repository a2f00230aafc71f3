"""RFC 9474 blind RSA: the four published test vectors step by step, round trips with fresh keys, every
refusal, and the fault guard of the issuer's private operation."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.core import blindrsa as B

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((DATA / "rfc9474_vectors.json").read_text(encoding="utf-8"))
VARIANT_BY_NAME = {variant.name: variant for variant in B.VARIANTS}


def _vector_key(vector: dict[str, str]) -> rsa.RSAPrivateKey:
    p, q, d, e, n = (int(vector[name], 16) for name in ("p", "q", "d", "e", "n"))
    assert p * q == n
    return rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e=e, n=n),
    ).private_key()


@pytest.fixture(scope="module")
def issuer() -> rsa.RSAPrivateKey:
    return B.generate_issuer_key(2048)


@pytest.fixture(scope="module")
def other_issuer() -> rsa.RSAPrivateKey:
    return B.generate_issuer_key(2048)


# --- the RFC's vectors ---------------------------------------------------------------------------------


def test_the_vectors_cover_all_four_variants() -> None:
    assert sorted(vector["name"] for vector in VECTORS) == sorted(VARIANT_BY_NAME)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector["name"])
def test_rfc9474_vector_every_step(vector: dict[str, str]) -> None:
    variant = VARIANT_BY_NAME[vector["name"]]
    sk = _vector_key(vector)
    pk = sk.public_key()
    n = int(vector["n"], 16)
    x = {name: bytes.fromhex(value) for name, value in vector.items() if name != "name"}

    assert variant.salt_length == len(x["salt"])
    assert variant.randomized == bool(x["msg_prefix"])
    prepared = B._prepare(x["msg"], variant, x["msg_prefix"])
    assert prepared == x["prepared_msg"]

    encoded = B._emsa_pss_encode(prepared, n.bit_length() - 1, x["salt"])
    assert encoded == x["encoded_msg"]

    r = pow(int(vector["inv"], 16), -1, n)
    blinded_msg, inv = B._blind(pk, prepared, variant, salt=x["salt"], r=r)
    assert blinded_msg == x["blinded_msg"]
    assert inv == x["inv"]

    blind_sig = B.blind_sign(sk, blinded_msg)
    assert blind_sig == x["blind_sig"]

    sig = B.finalize(pk, prepared, blind_sig, inv, variant)
    assert sig == x["sig"]
    B.verify(pk, prepared, sig, variant)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector["name"])
def test_rfc9474_vector_signature_fails_under_the_other_salt_length(vector: dict[str, str]) -> None:
    """The salt length is part of the variant: a PSS signature does not pass as PSSZERO and back."""
    variant = VARIANT_BY_NAME[vector["name"]]
    other = B.Variant("other", 0 if variant.salt_length else 48, variant.randomized)
    pk = _vector_key(vector).public_key()
    with pytest.raises(B.BlindRSAError):
        B.verify(pk, bytes.fromhex(vector["prepared_msg"]), bytes.fromhex(vector["sig"]), other)


def test_mgf1_matches_the_definition_for_a_mask_longer_than_one_hash() -> None:
    seed = b"gatewatch"
    mask = B._mgf1_sha384(seed, 100)
    expected = b"".join(hashlib.sha384(seed + i.to_bytes(4, "big")).digest() for i in range(3))[:100]
    assert mask == expected


# --- keys ------------------------------------------------------------------------------------------------

# RFC 9578 (Privacy Pass issuance), Appendix A.2: the issuer public key ``pkS`` of the publicly verifiable
# test vector (token type 0x0002), and the ``token`` issued under it (RSABSSA-SHA384-PSS-Deterministic).
# Written out here to show that public_key_to_spki writes the same bytes as Privacy Pass, that key_id is
# its token_key_id, and that verify accepts a Privacy Pass token made by another implementation.
RFC9578_PKS = bytes.fromhex(
    "30820156304106092a864886f70d01010a3034a00f300d06096086480165030402020500a11c301a06092a864886f70d010108"
    "300d06096086480165030402020500a2030201300382010f003082010a0282010100cb1aed6b6a95f5b1ce013a4cfcab25b9"
    "4b2e64a23034e4250a7eab43c0df3a8c12993af12b111908d4b471bec31d4b6c9ad9cdda90612a2ee903523e6de5a224d6b0"
    "2f09e5c374d0cfe01d8f529c500a78a2f67908fa682b5a2b430c81eaf1af72d7b5e794fc98a3139276879757ce453b526ef9"
    "bf6ceb99979b8423b90f4461a22af37aab0cf5733f7597abe44d31c732db68a181c6cbbe607d8c0e52e0655fd9996dc584ec"
    "a0be87afbcd78a337d17b1dba9e828bbd81e291317144e7ff89f55619709b096cbb9ea474cead264c2073fe49740c01f00e1"
    "09106066983d21e5f83f086e2e823c879cd43cef700d2a352a9babd612d03cad02db134b7e225a5f0203010001"
)


RFC9578_TOKEN = bytes.fromhex(
    "0002915204d157971dd132f04d3a4ee6cf6a84f2d7237aa3371ed5e5bf479a5d3612d7e6f39dc8b3abf6650f6b4fcb3f4a4e"
    "647ac322e54865c2fbaeb4b8d9cb2d03f861220ad4241ee0e33eb4a486a32f05af05ee33fcfdd1104c665eb827c206212d56"
    "d70fd5600bbf4ead34e8451166d61a6eb160affcde44780fc27f260b7e299f500fe1a60e45465a0779928c840009a0df8ff7"
    "90d38639e1a9e948a986a5e652add21533f74dadca6f1c1ce4cf592864cdaa12fbdeab32214f42ce4aaf855333e22b6f2207"
    "e6cc4d4a709b6a82b767ace1227438b14b4a9b4498cc358ca9670b33006d1ca78cbabf03a30c75cfd1c19bd6feb7760875598"
    "ee5cfdffd207f34ec88d6eeb07f0ef3238505327eef767b47c941478c32455b1113e2e6ac6d0c7df53d797ff076475f495753"
    "7b591f1fbb674d9fea7e3e570f352c302b84146443ccbfbd237b53d921445ab9d81650e9459b0f7da2ced16b9b7b959d6d7ed"
    "a7658"
)


def test_spki_is_rfc9578s_encoding_and_key_id_its_token_key_id() -> None:
    pk = B.public_key_from_spki(RFC9578_PKS)
    assert B.public_key_to_spki(pk) == RFC9578_PKS
    assert B.key_id(pk) == hashlib.sha256(RFC9578_PKS).hexdigest()
    # token = type (2) | nonce (32) | challenge digest (32) | token_key_id (32) | authenticator (256)
    token_input, authenticator = RFC9578_TOKEN[:98], RFC9578_TOKEN[98:]
    assert len(authenticator) == 256
    assert token_input[66:98].hex() == B.key_id(pk)
    B.verify(pk, token_input, authenticator, B.RSABSSA_SHA384_PSS_DETERMINISTIC)
    with pytest.raises(B.BlindRSAError):
        B.verify(pk, token_input[:-1] + b"\x00", authenticator, B.RSABSSA_SHA384_PSS_DETERMINISTIC)


def test_spki_round_trip_and_key_id_stable(issuer: rsa.RSAPrivateKey) -> None:
    pk = issuer.public_key()
    spki = B.public_key_to_spki(pk)
    again = B.public_key_from_spki(spki)
    assert again.public_numbers() == pk.public_numbers()
    assert B.key_id(again) == B.key_id(pk) == hashlib.sha256(spki).hexdigest()
    assert len(B.key_id(pk)) == 64
    # cryptography reads the PSS form as the same RSA key
    assert load_der_public_key(spki).public_numbers() == pk.public_numbers()


def test_key_ids_differ_between_keys(issuer: rsa.RSAPrivateKey, other_issuer: rsa.RSAPrivateKey) -> None:
    assert B.key_id(issuer.public_key()) != B.key_id(other_issuer.public_key())


def test_spki_refuses_other_encodings(issuer: rsa.RSAPrivateKey) -> None:
    pk = issuer.public_key()
    spki = B.public_key_to_spki(pk)
    rsa_encryption = pk.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    salt_32 = spki.replace(bytes.fromhex("a203020130"), bytes.fromhex("a203020120"))
    for bad in (rsa_encryption, salt_32, spki + b"\x00", spki[:-1], b"", b"\x30\x00", b"not der"):
        with pytest.raises(B.BlindRSAError):
            B.public_key_from_spki(bad)


def test_spki_refuses_a_non_rsa_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    der = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(B.BlindRSAError, match="not an RSA"):
        B.public_key_from_spki(der)


def test_weak_keys_refused() -> None:
    with pytest.raises(B.BlindRSAError):
        B.generate_issuer_key(1024)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(B.BlindRSAError):
        B.public_key_to_spki(weak.public_key())
    with pytest.raises(B.BlindRSAError):
        B.blind(weak.public_key(), B.prepare(b"m"))
    with pytest.raises(B.BlindRSAError):
        B.blind_sign(weak, bytes(128))


def test_other_public_exponents_refused(signed: tuple[bytes, bytes]) -> None:
    odd = rsa.generate_private_key(public_exponent=3, key_size=2048)
    for refused in (
        lambda: B.public_key_to_spki(odd.public_key()),
        lambda: B.blind(odd.public_key(), B.prepare(b"m")),
        lambda: B.verify(odd.public_key(), *signed),
    ):
        with pytest.raises(B.BlindRSAError, match="exponent"):
            refused()


def test_generated_key_uses_65537(issuer: rsa.RSAPrivateKey) -> None:
    assert issuer.public_key().public_numbers().e == 65537
    assert issuer.key_size == 2048


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", B.VARIANTS, ids=lambda variant: variant.name)
def test_round_trip_every_variant(issuer: rsa.RSAPrivateKey, variant: B.Variant) -> None:
    pk = issuer.public_key()
    prepared = B.prepare(b"epoch 2026-W49 | ephemeral key", variant)
    assert len(prepared) == len(b"epoch 2026-W49 | ephemeral key") + (
        B.PREFIX_LENGTH if variant.randomized else 0
    )
    blinded_msg, inv = B.blind(pk, prepared, variant)
    assert len(blinded_msg) == len(inv) == 256
    sig = B.finalize(pk, prepared, B.blind_sign(issuer, blinded_msg), inv, variant)
    B.verify(pk, prepared, sig, variant)


def test_default_variant_is_pss_randomized() -> None:
    assert B.RSABSSA_SHA384_PSS_RANDOMIZED == B.Variant("RSABSSA-SHA384-PSS-Randomized", 48, True)
    assert B.blind.__defaults__ == (B.RSABSSA_SHA384_PSS_RANDOMIZED,)


def test_blinding_hides_the_message_and_randomizes(issuer: rsa.RSAPrivateKey) -> None:
    """Two blindings of one prepared message share nothing the issuer could match; two preparations of
    one message differ (the random prefix); and two signatures of one message differ (salt, prefix)."""
    pk = issuer.public_key()
    prepared = B.prepare(b"same")
    assert prepared != B.prepare(b"same")
    first, first_inv = B.blind(pk, prepared)
    second, second_inv = B.blind(pk, prepared)
    assert first != second and first_inv != second_inv
    sig_1 = B.finalize(pk, prepared, B.blind_sign(issuer, first), first_inv)
    sig_2 = B.finalize(pk, prepared, B.blind_sign(issuer, second), second_inv)
    assert sig_1 != sig_2  # fresh salt each time
    assert sig_1 not in (first, second) and sig_2 not in (first, second)


@settings(max_examples=15, deadline=None)
@given(msg=st.binary(max_size=300), variant=st.sampled_from(B.VARIANTS))
def test_round_trip_any_message(issuer: rsa.RSAPrivateKey, msg: bytes, variant: B.Variant) -> None:
    pk = issuer.public_key()
    prepared = B.prepare(msg, variant)
    assert prepared.endswith(msg)
    blinded_msg, inv = B.blind(pk, prepared, variant)
    sig = B.finalize(pk, prepared, B.blind_sign(issuer, blinded_msg), inv, variant)
    B.verify(pk, prepared, sig, variant)
    with pytest.raises(B.BlindRSAError):
        B.verify(pk, prepared + b"\x00", sig, variant)


# --- what must fail --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(issuer: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    prepared = B.prepare(b"batch")
    blinded_msg, inv = B.blind(issuer.public_key(), prepared)
    return prepared, B.finalize(issuer.public_key(), prepared, B.blind_sign(issuer, blinded_msg), inv)


def test_tampered_message_fails(issuer: rsa.RSAPrivateKey, signed: tuple[bytes, bytes]) -> None:
    prepared, sig = signed
    for tampered in (prepared[:-1] + bytes([prepared[-1] ^ 1]), prepared[B.PREFIX_LENGTH :], b""):
        with pytest.raises(B.BlindRSAError):
            B.verify(issuer.public_key(), tampered, sig)


def test_tampered_signature_fails(issuer: rsa.RSAPrivateKey, signed: tuple[bytes, bytes]) -> None:
    prepared, sig = signed
    for tampered in (sig[:-1] + bytes([sig[-1] ^ 1]), sig[:-1], sig + b"\x00", bytes(256), b""):
        with pytest.raises(B.BlindRSAError):
            B.verify(issuer.public_key(), prepared, tampered)


def test_wrong_key_fails(other_issuer: rsa.RSAPrivateKey, signed: tuple[bytes, bytes]) -> None:
    prepared, sig = signed
    with pytest.raises(B.BlindRSAError):
        B.verify(other_issuer.public_key(), prepared, sig)


def test_finalize_refuses_a_signature_by_another_key(
    issuer: rsa.RSAPrivateKey, other_issuer: rsa.RSAPrivateKey
) -> None:
    pk = issuer.public_key()
    n, other_n = pk.public_numbers().n, other_issuer.public_key().public_numbers().n
    prepared = B.prepare(b"batch")
    # Bounded: a blinding below the other modulus whose blind signature is below ours too (about a
    # quarter of draws), so that finalize gets as far as verifying (the range check is tested apart).
    for _ in range(200):
        blinded_msg, inv = B.blind(pk, prepared)
        if int.from_bytes(blinded_msg, "big") >= other_n:
            continue
        blind_sig = B.blind_sign(other_issuer, blinded_msg)
        if int.from_bytes(blind_sig, "big") < n:
            break
    else:
        pytest.fail("no blinding in range of both moduli in 200 draws")
    with pytest.raises(B.BlindRSAError, match="does not verify"):
        B.finalize(pk, prepared, blind_sig, inv)


def test_finalize_refuses_a_signature_of_another_request(issuer: rsa.RSAPrivateKey) -> None:
    pk = issuer.public_key()
    prepared = B.prepare(b"batch")
    blinded_msg, inv = B.blind(pk, prepared)
    other_blinded, _ = B.blind(pk, B.prepare(b"other"))
    with pytest.raises(B.BlindRSAError):
        B.finalize(pk, prepared, B.blind_sign(issuer, other_blinded), inv)


def test_finalize_refuses_wrong_lengths_and_out_of_range(issuer: rsa.RSAPrivateKey) -> None:
    pk = issuer.public_key()
    n = pk.public_numbers().n
    prepared = B.prepare(b"batch")
    blinded_msg, inv = B.blind(pk, prepared)
    blind_sig = B.blind_sign(issuer, blinded_msg)
    too_big = n.to_bytes(256, "big")
    for bad_sig, bad_inv in (
        (blind_sig[1:], inv),
        (blind_sig, inv + b"\x00"),
        (too_big, inv),
        (blind_sig, too_big),
    ):
        with pytest.raises(B.BlindRSAError):
            B.finalize(pk, prepared, bad_sig, bad_inv)


def test_blind_sign_rejects_out_of_range_input(issuer: rsa.RSAPrivateKey) -> None:
    n = issuer.public_key().public_numbers().n
    for bad in (n.to_bytes(256, "big"), (n + 1).to_bytes(256, "big"), b"\xff" * 256):
        with pytest.raises(B.BlindRSAError, match="out of range"):
            B.blind_sign(issuer, bad)


@pytest.mark.parametrize("length", [0, 1, 255, 257, 512])
def test_blind_sign_rejects_wrong_length(issuer: rsa.RSAPrivateKey, length: int) -> None:
    with pytest.raises(B.BlindRSAError, match="bytes"):
        B.blind_sign(issuer, b"\x01" * length)


def test_blind_refuses_a_bad_salt_or_factor(issuer: rsa.RSAPrivateKey) -> None:
    pk = issuer.public_key()
    numbers = issuer.private_numbers()
    prepared = B.prepare(b"m")
    with pytest.raises(B.BlindRSAError, match="salt"):
        B._blind(pk, prepared, B.RSABSSA_SHA384_PSS_RANDOMIZED, salt=b"short", r=3)
    for r in (0, numbers.public_numbers.n):
        with pytest.raises(B.BlindRSAError, match="range"):
            B._blind(pk, prepared, B.RSABSSA_SHA384_PSS_RANDOMIZED, salt=bytes(48), r=r)
    with pytest.raises(B.BlindRSAError, match="not invertible"):
        B._blind(pk, prepared, B.RSABSSA_SHA384_PSS_RANDOMIZED, salt=bytes(48), r=numbers.p)


def test_prepare_prefix_rules() -> None:
    with pytest.raises(B.BlindRSAError):
        B._prepare(b"m", B.RSABSSA_SHA384_PSS_RANDOMIZED, b"short")
    with pytest.raises(B.BlindRSAError):
        B._prepare(b"m", B.RSABSSA_SHA384_PSS_DETERMINISTIC, bytes(32))
    assert B.prepare(b"m", B.RSABSSA_SHA384_PSS_DETERMINISTIC) == b"m"


# --- the issuer's private operation ------------------------------------------------------------------------


def test_blinded_private_operation_is_the_rsa_private_operation(issuer: rsa.RSAPrivateKey) -> None:
    numbers = issuer.private_numbers()
    n = numbers.public_numbers.n
    for m in (0, 1, 2, n - 1, numbers.p, 123456789 * numbers.q % n):
        assert B._rsa_private_blinded(numbers, m) == pow(m, numbers.d, n)


def _faulty_crt(numbers: rsa.RSAPrivateNumbers, m: int) -> int:
    """A Bellcore fault: the half modulo p computed with a corrupted exponent, the half modulo q right."""
    p, q = numbers.p, numbers.q
    sp = pow(m % p, numbers.dmp1 ^ 1, p)
    sq = pow(m % q, numbers.dmq1, q)
    return sq + (numbers.iqmp * (sp - sq) % p) * q


def test_fault_guard_refuses_a_faulty_private_operation(issuer: rsa.RSAPrivateKey) -> None:
    numbers = issuer.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    blinded_msg, _ = B.blind(issuer.public_key(), B.prepare(b"batch"))
    m = int.from_bytes(blinded_msg, "big")
    # what the guard protects: the faulty result would give away a factor of n to whoever asked
    faulty = _faulty_crt(numbers, m)
    assert math.gcd(pow(faulty, e, n) - m, n) == numbers.q
    with pytest.raises(B.SigningFaultError, match="signing failure"):
        B._blind_sign(issuer, blinded_msg, private_operation=_faulty_crt)
    with pytest.raises(B.SigningFaultError):
        B._blind_sign(issuer, blinded_msg, private_operation=lambda numbers, m: numbers.public_numbers.n + 1)
    assert issubclass(B.SigningFaultError, B.BlindRSAError)


def test_blind_sign_output_verifies(issuer: rsa.RSAPrivateKey) -> None:
    """blind_sign returns the RSA signature of its input, whatever the blinding chose."""
    numbers = issuer.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    blinded_msg, _ = B.blind(issuer.public_key(), B.prepare(b"batch"))
    first, second = B.blind_sign(issuer, blinded_msg), B.blind_sign(issuer, blinded_msg)
    assert first == second
    assert pow(int.from_bytes(first, "big"), e, n) == int.from_bytes(blinded_msg, "big")

"""Throughput of RFC 9474 blind RSA (core/blindrsa.py), each next to a bare baseline measured in the same run.

    python bench/blindrsa.py [--bits 2048] [--repeats 7] [--ops 50]

One issuer key (e = 65537) is generated once. Each repeat times, in turn and on the same key, ``--ops``
operations of every pair below (CPU time of this process, so the other users of a shared machine count
less), then the next repeat starts; ratios are taken within a repeat, so both sides of one ratio saw the
same machine. Prints, per figure, the median over the repeats and the spread (min-max). Asserts nothing.

- issuer: ``blind_sign`` (Python integers: blinded CRT + the s^e == m guard) vs ``cryptography``'s own
  RSA-PSS-SHA384 sign (OpenSSL, constant-time), per token;
- client: ``prepare`` + ``blind`` + ``finalize`` (which verifies) vs ``cryptography`` RSA-PSS verify alone;
- anyone: ``verify`` vs the bare ``cryptography`` RSA-PSS verify and vs Ed25519 verify (today's envelope).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from gatewatch.core import blindrsa as B

MESSAGE = b"epoch 2026-W49 | 32-byte ephemeral Ed25519 public key"


def _per_second(operation: Callable[[], object], ops: int) -> float:
    started = time.process_time()
    for _ in range(ops):  # bounded: --ops calls
        operation()
    return ops / max(time.process_time() - started, 1e-9)


def _client_per_second(sk: RSAPrivateKey, ops: int) -> float:
    """prepare + blind, then finalize, timed; the issuer's blind_sign between them is not."""
    pk = sk.public_key()
    started = time.process_time()
    requests = []
    for _ in range(ops):  # bounded: --ops tokens
        prepared = B.prepare(MESSAGE)
        requests.append((prepared, *B.blind(pk, prepared)))
    seconds = time.process_time() - started
    answers = [B.blind_sign(sk, blinded) for _, blinded, _ in requests]
    started = time.process_time()
    for (prepared, _, inv), blind_sig in zip(requests, answers, strict=True):
        B.finalize(pk, prepared, blind_sig, inv)
    seconds += time.process_time() - started
    return ops / max(seconds, 1e-9)


def _figure(values: list[float], unit: str) -> str:
    digits = 2 if unit == "x" else 0
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:9.{digits}f} {unit}  (min {low:.{digits}f}, max {high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ops", type=int, default=50)
    args = parser.parse_args()

    sk = B.generate_issuer_key(args.bits)
    pk = sk.public_key()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    prepared = B.prepare(MESSAGE)
    blinded_msg, inv = B.blind(pk, prepared)
    signature = B.finalize(pk, prepared, B.blind_sign(sk, blinded_msg), inv)
    ed_key = Ed25519PrivateKey.generate()
    ed_public, ed_signature = ed_key.public_key(), ed_key.sign(MESSAGE)

    operations: dict[str, Callable[[], object]] = {
        "blind_sign": lambda: B.blind_sign(sk, blinded_msg),
        "openssl_pss_sign": lambda: sk.sign(MESSAGE, pss, hashes.SHA384()),
        "verify": lambda: B.verify(pk, prepared, signature),
        "openssl_pss_verify": lambda: pk.verify(signature, prepared, pss, hashes.SHA384()),
        "ed25519_verify": lambda: ed_public.verify(ed_signature, MESSAGE),
    }
    rates: dict[str, list[float]] = {name: [] for name in (*operations, "client")}
    ratios: dict[str, list[float]] = {
        name: [] for name in ("issuer", "client", "verify_pss", "verify_ed25519")
    }
    for _ in range(args.repeats):  # bounded: --repeats rounds
        rate = {name: _per_second(operation, args.ops) for name, operation in operations.items()}
        rate["client"] = _client_per_second(sk, args.ops)
        for name, value in rate.items():
            rates[name].append(value)
        ratios["issuer"].append(rate["openssl_pss_sign"] / rate["blind_sign"])
        ratios["client"].append(rate["openssl_pss_verify"] / rate["client"])
        ratios["verify_pss"].append(rate["openssl_pss_verify"] / rate["verify"])
        ratios["verify_ed25519"].append(rate["ed25519_verify"] / rate["verify"])

    print(f"RSA-{args.bits}, e=65537, {B.RSABSSA_SHA384_PSS_RANDOMIZED.name}")
    print(f"{args.repeats} repeats x {args.ops} ops each, CPU time of this process")
    print(f"issuer  blind_sign (tokens issued)   {_figure(rates['blind_sign'], '/s')}")
    print(f"        baseline: OpenSSL PSS sign   {_figure(rates['openssl_pss_sign'], '/s')}")
    print(f"        cost ratio blind_sign/sign   {_figure(ratios['issuer'], 'x')}")
    print(f"client  prepare+blind+finalize       {_figure(rates['client'], '/s')}")
    print(f"        cost ratio to a PSS verify   {_figure(ratios['client'], 'x')}")
    print(f"anyone  verify                       {_figure(rates['verify'], '/s')}")
    print(f"        baseline: OpenSSL PSS verify {_figure(rates['openssl_pss_verify'], '/s')}")
    print(f"        baseline: Ed25519 verify     {_figure(rates['ed25519_verify'], '/s')}")
    print(f"        cost ratio to PSS verify     {_figure(ratios['verify_pss'], 'x')}")
    print(f"        cost ratio to Ed25519 verify {_figure(ratios['verify_ed25519'], 'x')}")


if __name__ == "__main__":
    main()

"""What unlinkable uploads (issue 12) cost the collector: verification per measurement with a token per
batch, next to plain Ed25519 per measurement, in the same run; and tokens issued per second.

    python bench/batch_verify.py [--repeats 7] [--measurements 1000] [--issue 256]

Per repeat, on the same measurements (real-sized JSON payloads):

- plain: ``envelope.verify`` of each envelope signed by one long-term key (the identified mode's work);
- token: per batch of B, the token's checks as ingest makes them (``TokenParts.decode``, the key id,
  ``verify_token``: one RSA-PSS-SHA384 verification) plus ``envelope.verify`` of each envelope signed by
  the batch's ephemeral key, and the ephemeral-key check of each item; divided by the measurements;
- issuance: ``blind_sign`` (the issuer's private operation with its blinding and fault guard), tokens/s,
  and the agent's side (``prepare`` + ``blind`` + ``finalize``), tokens/s.

CPU time of this process (others on a shared machine count less); ratios are taken within a repeat. Prints
medians and the spread (min-max). Asserts nothing. Goal (issue 12): token/plain <= 1.2 at B = 50.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from gatewatch.core import blindrsa, envelope
from gatewatch.core.batch_token import PREFIX_BYTES, TokenParts, token_message, verify_token
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now

BATCH_SIZES = (1, 10, 50, 100)


def payloads(count: int) -> list[bytes]:
    now = utc_now()
    return [
        Measurement(
            measurement_start_time=now,
            test_start_time=now,
            test_runtime=0.4,
            input=f"https://site{i}.example.org/some/path?q={i}",
            probe_asn="AS64501",
            probe_cc="XL",
            test_keys=WebTestKeys(),
        ).to_json_bytes()
        for i in range(count)
    ]


def token_for(issuer: RSAPrivateKey, epoch: int, key_id: str, ephemeral: Ed25519PrivateKey) -> dict:
    public = issuer.public_key()
    prepared = blindrsa.prepare(token_message(epoch, key_id, envelope.public_key_bytes(ephemeral)))
    blinded, inverse = blindrsa.blind(public, prepared)
    signature = blindrsa.finalize(public, prepared, blindrsa.blind_sign(issuer, blinded), inverse)
    return {
        "epoch": epoch,
        "key_id": key_id,
        "ephemeral_public_key": base64.b64encode(envelope.public_key_bytes(ephemeral)).decode(),
        "token": base64.b64encode(prepared[:PREFIX_BYTES] + signature).decode(),
    }


def cpu(fn: Callable[[], object]) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--measurements", type=int, default=1000, help="per repeat (a multiple of 100)")
    parser.add_argument("--issue", type=int, default=128, help="tokens issued per repeat")
    args = parser.parse_args()

    issuer = blindrsa.generate_issuer_key()
    public = issuer.public_key()
    key_id = blindrsa.key_id(public)
    epoch = 2900
    data = payloads(args.measurements)
    long_term = Ed25519PrivateKey.generate()
    plain = [envelope.sign(p, long_term) for p in data]
    batched = {}
    for size in BATCH_SIZES:
        batches = []
        for start in range(0, len(data), size):
            ephemeral = Ed25519PrivateKey.generate()
            envs = [envelope.sign(p, ephemeral) for p in data[start : start + size]]
            batches.append((token_for(issuer, epoch, key_id, ephemeral), envs))
        batched[size] = batches

    def verify_plain() -> None:
        for env in plain:
            envelope.verify(env)

    def verify_batched(size: int) -> Callable[[], None]:
        def run() -> None:
            for token, envs in batched[size]:
                parts = TokenParts.decode(
                    token["epoch"], token["key_id"], token["ephemeral_public_key"], token["token"]
                )
                verify_token(parts, public)
                for env in envs:
                    _, key = envelope.verify(env)
                    if key != parts.ephemeral_public_key:
                        raise AssertionError("wrong key")

        return run

    blinded = [blindrsa.blind(public, blindrsa.prepare(b"m" * 96))[0] for _ in range(args.issue)]

    def issue() -> None:
        for message in blinded:
            blindrsa.blind_sign(issuer, message)

    def client() -> None:
        for _ in range(max(1, args.issue // 4)):
            prepared = blindrsa.prepare(b"m" * 96)
            message, inverse = blindrsa.blind(public, prepared)
            blindrsa.finalize(public, prepared, blindrsa.blind_sign(issuer, message), inverse)

    ratios: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
    plain_us: list[float] = []
    issued: list[float] = []
    client_rates: list[float] = []
    for _ in range(args.repeats):
        base = cpu(verify_plain) / len(data)
        plain_us.append(base * 1e6)
        for size in BATCH_SIZES:
            ratios[size].append(cpu(verify_batched(size)) / len(data) / base)
        issued.append(args.issue / cpu(issue))
        client_rates.append(max(1, args.issue // 4) / cpu(client))

    def show(values: list[float], unit: str = "") -> str:
        return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"

    print(f"measurements per repeat: {len(data)}, repeats: {args.repeats}, issuer key: 2048 bits")
    print(f"plain Ed25519 envelope.verify per measurement: {show(plain_us, ' us')}")
    for size in BATCH_SIZES:
        print(f"token batch of {size:>3}: per measurement {show(ratios[size], 'x')} the plain cost")
    print(f"tokens issued per second (blind_sign, one core): {show(issued)}")
    agent = show(client_rates)
    print(f"tokens made per second by an agent (prepare+blind+finalize, with the issuer's sign): {agent}")


if __name__ == "__main__":
    main()

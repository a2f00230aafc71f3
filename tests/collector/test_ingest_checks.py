"""collector/ingest_checks.py: verification overlapped with judging gives the answers one-after-the-other
checking gives, item for item, whatever the batch holds (real signatures, the real analysis)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.analysis.fingerprints import load_default_fingerprints
from gatewatch.collector.batch_auth import batch_digest, digest_of_items, token_row
from gatewatch.collector.ingest_checks import VERIFY_CHUNK, Judging, check_batch
from gatewatch.collector.settings import Settings
from gatewatch.collector.vouched_control import ControlJudge
from gatewatch.core import envelope
from gatewatch.core.batch_token import TokenParts
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import (
    BAD_SIGNATURE,
    INVALID_ENVELOPE,
    INVALID_MEASUREMENT,
    SCHEME_BLIND_TOKEN,
    TOO_OLD,
)

from .conftest import CONTROL_SECRET, TEST_SIGNER

FINGERPRINTS = load_default_fingerprints()


def _batch(sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement]) -> list[Any]:
    """3.5 chunks of items, good ones among every kind of bad one."""
    other = Ed25519PrivateKey.generate()
    items: list[Any] = []
    for n in range(3 * VERIFY_CHUNK + VERIFY_CHUNK // 2):
        item = sign(make_measurement(input=f"http://site{n}.lab/"))
        match n % 6:
            case 1:
                item["signature"] = sign()["signature"]  # another payload's signature
            case 2:
                item = {"payload": "not an envelope"}
            case 3:
                item = sign(make_measurement(measurement_start_time=datetime.now(UTC) - timedelta(days=30)))
            case 4:
                item = envelope.sign(b'{"not": "a measurement"}', other).model_dump()
            case 5:
                item = sign(make_measurement(), other)  # signed by a key this batch may not use
        items.append(item)
    return items


def _judging() -> Judging:
    settings = Settings(db="sqlite:///:memory:", control_signing_secret=CONTROL_SECRET)
    judge = ControlJudge(TEST_SIGNER, timedelta(hours=1), lambda url: None)
    return Judging(settings, FINGERPRINTS, None, datetime.now(UTC), None, judge)


def _answers(items: list[Any]) -> list[tuple[Any, ...]]:
    return [(i.index, i.status, i.reason, i.public_key, i.row and dataclasses.replace(i.row)) for i in items]


def test_overlapped_and_one_after_the_other_agree(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement], agent_key: Any
) -> None:
    raw = _batch(sign, make_measurement)
    ours = envelope.public_key_bytes(agent_key)
    judging = _judging()
    serial, serial_failures = check_batch(raw, judging, None, lambda key: key == ours)
    with ThreadPoolExecutor(max_workers=2) as verifiers:
        overlapped, failures = check_batch(raw, judging, verifiers, lambda key: key == ours)
    assert _answers(overlapped) == _answers(serial) and failures == serial_failures == 0
    assert [i.index for i in overlapped] == list(range(len(raw)))
    reasons = {n % 6: (i.status, i.reason) for n, i in enumerate(overlapped)}
    assert reasons[0][0] == "verified" and overlapped[0].row is not None  # judged, to be stored
    assert reasons[1] == ("rejected", BAD_SIGNATURE)
    assert reasons[2] == ("rejected", INVALID_ENVELOPE)
    assert reasons[3] == ("rejected", TOO_OLD)
    assert reasons[4] == ("verified", None)  # another key: not judged here (ingest rejects it by its key)
    assert reasons[5] == ("verified", None) and overlapped[5].row is None
    # the measurement that is not one is rejected once its key may sign
    (bad,), _ = check_batch([raw[4]], judging, None)
    assert (bad.status, bad.reason) == ("rejected", INVALID_MEASUREMENT)


def test_a_token_batch_rows_carry_the_token_as_token_row_would_write_it(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement], agent_key: Any
) -> None:
    """Judged with the batch's token, the items its ephemeral key signed get rows equal to the rows judged
    without it and then given the token by ``batch_auth.token_row``; other keys' rows stay long-term."""
    raw = _batch(sign, make_measurement)
    ephemeral = envelope.public_key_bytes(agent_key)
    token = TokenParts(epoch=7, key_id="k1", ephemeral_public_key=ephemeral, token=b"t" * 300)
    plain = _judging()
    with_token = dataclasses.replace(plain, token=token)
    (without, _), (signed, _) = (check_batch(raw, j, None) for j in (plain, with_token))
    rows = 0
    for before, after in zip(without, signed, strict=True):
        assert (before.status, before.reason) == (after.status, after.reason)
        if before.row is None:
            assert after.row is None
        elif before.public_key == ephemeral:
            assert after.row == token_row(before.row, before.signature, token)
            assert after.row.signature_scheme == SCHEME_BLIND_TOKEN and after.row.signature == after.signature
            rows += 1
        else:
            assert after.row == before.row and after.row.token is None
    assert rows >= 3


def test_a_token_batch_is_hashed_beside_its_verification_as_batch_digest_hashes_it(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement], agent_key: Any
) -> None:
    """With a token, every item (a bad one too) carries its digest, in or out of the verifier threads, and
    together they are the batch's digest; identified, nothing is hashed."""
    raw = _batch(sign, make_measurement)
    ephemeral = envelope.public_key_bytes(agent_key)
    token = TokenParts(epoch=7, key_id="k1", ephemeral_public_key=ephemeral, token=b"t" * 300)
    with_token = dataclasses.replace(_judging(), token=token)
    serial, _ = check_batch(raw, with_token, None)
    with ThreadPoolExecutor(max_workers=2) as verifiers:
        overlapped, _ = check_batch(raw, with_token, verifiers)
    for items in (serial, overlapped):
        assert all(len(i.digest) == 32 for i in items)
        assert digest_of_items(i.digest for i in items) == batch_digest(raw)
    assert digest_of_items(i.digest for i in serial[::-1]) != batch_digest(raw)
    identified, _ = check_batch(raw, _judging(), None)
    assert {i.digest for i in identified} == {b""}

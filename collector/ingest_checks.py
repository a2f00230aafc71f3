"""What ingest does to each item of a batch off the event loop: check its envelope's signature, then parse
it, check its times and re-derive its verdict (``ingest.py`` answers and stores).

The two overlap. Ed25519 verification runs without Python's lock held (``cryptography`` releases it), so a
batch's envelopes are verified in chunks on a small pool of verifier threads while the calling thread
judges the chunks already verified: on two cores, verification is mostly hidden behind the analysis
instead of being added to it. Judging is pure (no I/O, nothing kept): an item judged and then refused
(a key the batch may not use, a rate limit) only costs the CPU. A token batch's items are hashed for its
spend (``batch_auth.batch_digest``) beside their verification too, not on the event loop (the hash, like
the verification, runs without the lock for a measurement's kilobytes).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from gatewatch.analysis import analyse
from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.core.batch_token import TokenParts
from gatewatch.core.envelope import Envelope, EnvelopeError, verify
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import (
    ANALYSIS_ERROR,
    CONTROL_UNVERIFIED,
    INVALID_ENVELOPE,
    INVALID_JSON,
    INVALID_MEASUREMENT,
    TOO_FAR_IN_FUTURE,
    TOO_OLD,
)
from gatewatch.core.wire import IngestItemResult, ItemStatus

from .appkeys import GeoLookup
from .batch_auth import item_digest
from .geoip import GeoInfo
from .judging import NO_VERDICT, mismatch_flags, rederive_dns_answers, stored_row, token_fields
from .settings import Settings
from .store.base import StoredMeasurement
from .vouched_control import ControlJudge

__all__ = ["VERIFY_CHUNK", "Item", "Judging", "check_batch", "judge_items", "verify_items"]

VERIFY_CHUNK = 10  # envelopes per verifier task: small enough that judging starts early
log = logging.getLogger(__name__)


@dataclass
class Item:
    """One entry of the batch on its way through the checks."""

    index: int
    measurement_uid: str | None = None
    # "verified" while the item is on its way: by the answer it is one of the wire's statuses.
    status: ItemStatus | Literal["verified"] = "rejected"
    reason: str | None = None
    payload: bytes = b""
    signature: bytes = b""
    public_key: bytes = b""
    row: StoredMeasurement | None = None
    digest: bytes = b""  # batch_auth.item_digest of the item as sent, when the batch's spend needs it

    def reject(self, reason: str) -> None:
        self.status, self.reason, self.row = "rejected", reason, None

    def as_result(self) -> IngestItemResult:
        if self.status == "verified":  # every verified item is judged, then stored or rejected
            raise RuntimeError(f"item {self.index} was never judged")
        return IngestItemResult(
            index=self.index, measurement_uid=self.measurement_uid, status=self.status, reason=self.reason
        )


def verify_items(raw: Sequence[Any], first_index: int = 0, digests: bool = False) -> list[Item]:
    """Envelope shape and signature of each item (CPU-bound, mostly without the interpreter's lock);
    ``digests``: each item's ``digest`` too, whatever it holds."""
    items: list[Item] = []
    for index, value in enumerate(raw, first_index):
        item = Item(index)
        items.append(item)
        if digests:
            item.digest = item_digest(value)
        try:
            envelope = Envelope.model_validate(value)
            item.payload, item.public_key = verify(envelope)
        except ValidationError:
            item.reject(INVALID_ENVELOPE)
            continue
        except EnvelopeError as exc:
            item.reject(exc.reason)
            continue
        # verify() accepted the base64; decoding it again cannot fail.
        item.signature = base64.b64decode(envelope.signature, validate=True)
        item.status = "verified"
    return items


@dataclass(frozen=True)
class Judging:
    """What judging a batch needs: ``geo`` is the submitting connection's network, ``geodb`` the databases
    for DNS answers, ``judge_control`` the vouched-control check (None: the agent's control as given),
    ``token`` the batch's token (its fields go into the rows of the items its ephemeral key signed)."""

    settings: Settings
    fingerprints: FingerprintDB
    geo: GeoInfo | None
    now: datetime
    geodb: GeoLookup | None = None
    judge_control: ControlJudge | None = None
    token: TokenParts | None = None


def judge_items(items: Sequence[Item], judging: Judging) -> int:
    """Parse, check times and re-derive the verdict of every verified item. Returns how many items the
    analysis failed on."""
    settings, now = judging.settings, judging.now
    newest = now + timedelta(seconds=settings.max_future_seconds)
    oldest = now - timedelta(seconds=settings.max_age_seconds)
    failures = 0
    for item in items:
        if item.status != "verified":
            continue
        try:
            m = Measurement.model_validate_json(item.payload)
        except ValidationError as exc:
            not_json = any(error["type"] == "json_invalid" for error in exc.errors())
            item.reject(INVALID_JSON if not_json else INVALID_MEASUREMENT)
            continue
        item.measurement_uid = m.measurement_uid
        if m.measurement_start_time > newest:
            item.reject(TOO_FAR_IN_FUTURE)
            continue
        if m.measurement_start_time < oldest:
            item.reject(TOO_OLD)
            continue
        flags = mismatch_flags(m, judging.geo)
        try:
            keys = rederive_dns_answers(m.test_keys, settings.control_allow_net, judging.geodb)
            control = keys.control
            if judging.judge_control is not None:  # only a control the collector can authenticate (or none)
                decided = judging.judge_control(m, now)
                control = decided.control
                flags = (*flags, CONTROL_UNVERIFIED) if decided.unverified else flags
            verdict = analyse(m.input, keys, control, judging.fingerprints)
        except Exception as exc:  # a bug in the analysis must cost one verdict, not the item or the batch
            # The traceback is what fixing the bug needs; the log formatter masks any address it quotes.
            log.exception(
                "analysis failed",
                extra={"measurement_uid": m.measurement_uid, "error_type": type(exc).__name__},
            )
            verdict = NO_VERDICT
            flags = (*flags, ANALYSIS_ERROR)
            failures += 1
        token = judging.token
        signed = None
        if token is not None and item.public_key == token.ephemeral_public_key:
            signed = token_fields(item.signature, token)
        item.row = stored_row(m, verdict, flags, item.payload, now, signed)
    return failures


def check_batch(
    raw: Sequence[Any],
    judging: Judging,
    verifiers: Executor | None,
    may_sign: Callable[[bytes], bool] = lambda key: True,
) -> tuple[list[Item], int]:
    """Verify every item (on ``verifiers``, in chunks; None: here, one after the other) and judge each
    verified one whose key ``may_sign`` in this batch, the judging of a chunk overlapping the verification
    of the next (a batch of one chunk is verified here: nothing to overlap). With a token (``judging``'s),
    each item's ``digest`` is computed with its verification. Returns the items in order and how many
    analyses failed. Runs on a worker thread."""
    digests = judging.token is not None
    starts = range(0, len(raw), VERIFY_CHUNK)
    if len(raw) <= VERIFY_CHUNK:
        verifiers = None  # one chunk: nothing to overlap
    if verifiers is None:
        chunks: list[Callable[[], list[Item]]] = [
            lambda s=s: verify_items(raw[s : s + VERIFY_CHUNK], s, digests) for s in starts
        ]
    else:
        futures = [verifiers.submit(verify_items, raw[s : s + VERIFY_CHUNK], s, digests) for s in starts]
        chunks = [future.result for future in futures]
    items: list[Item] = []
    failures = 0
    try:
        for next_chunk in chunks:
            verified = next_chunk()
            items.extend(verified)
            failures += judge_items([i for i in verified if may_sign(i.public_key)], judging)
    finally:
        if verifiers is not None:
            for future in futures:
                future.cancel()  # after an error: no more verifying for an answer nobody waits for
    return items, failures

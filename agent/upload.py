"""Deliver queued measurements to a collector: batched, retried with backoff, never lost, never doubled.

Per item the collector answers ``accepted`` or ``duplicate`` (both mean "the collector has it": the row
becomes ``sent``) or ``rejected`` with a reason (the row is quarantined with that reason and not
retried: sending it again would be refused again).

Only the collector's own words quarantine anything: a per-item ``rejected`` in a JSON answer of the
documented shape, or a whole-request 400/413 whose body is the collector's JSON ``{"error": reason}``
with a reason that is about the batch's content (narrowed down by halving the batch, so that one bad
row is quarantined without holding back the others). Between the agent and the collector sit censors,
captive portals and proxies that answer with 403 blockpages, 302 redirects to a login page or their own
413 body limits: those say nothing about the measurement, so they, like 5xx, 429 (with Retry-After) and
network errors, are retried, first at the next collector URL, then after an exponential backoff with
full jitter, a bounded number of times per pass; rows stay ``pending`` for the next pass. A batch that
still fails is left for the next pass and the following batches get their turn, so one stuck batch does
not hold back the whole queue; a few failed batches in a row end the upload pass (the collector is
unreachable: trying every batch would only add waiting).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.vocabulary import CONTENT_REFUSALS, TOKEN_REFUSALS
from gatewatch.core.wire import ErrorBody, IngestItemResult

from .addresses import ATTEMPTS_KEY, CollectorAddress, as_addresses
from .batches import SealedBatch, TokenBatches
from .collector_api import BAD_ANSWER, TOLERATED_EXTRA, CollectorSession, api_url, record_attempt, route_for
from .http_client import HttpClient, HttpClientError, Response
from .queue import MeasurementQueue, QueuedMeasurement

__all__ = ["LAST_UPLOAD_ERROR_KEY", "LAST_UPLOAD_KEY", "RetryPolicy", "UploadReport", "Uploader"]

log = logging.getLogger(__name__)

LAST_UPLOAD_KEY = "last_upload"
NO_TOKENS = "no tokens in the wallet (the collector's issuer was not reached)"
LAST_UPLOAD_ERROR_KEY = "last_upload_error"  # kept after later successes, so `status` can say when
# Whole-request refusals about the batch's content (vocabulary.CONTENT_REFUSALS) come with these statuses.
_REFUSAL_STATUSES = frozenset({400, 413})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # rounds over all collector URLs, per batch, per pass
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full jitter (uniform in [0, base·2^attempt], capped) so that agents do not retry in step;
        never sooner than the collector's Retry-After (also capped)."""
        delay = rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


@dataclass
class UploadReport:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    still_pending: int = 0
    requests: int = 0
    last_error: str | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.accepted + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": format_utc(utc_now()),
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "still_pending": self.still_pending,
            "error": self.last_error,
        }


@dataclass(frozen=True)
class _Answered:
    results: list[IngestItemResult]


@dataclass(frozen=True)
class _Retry:
    error: str
    retry_after: float | None = None


@dataclass(frozen=True)
class _Refused:
    """The collector itself refused the whole request for its content (``vocabulary.CONTENT_REFUSALS``)."""

    error: str


def _collector_error(response: Response) -> str | None:
    """The reason of an error answer in the collector's own shape (an :class:`ErrorBody`, served as JSON),
    else None: a censor's or a portal's page is not the collector speaking."""
    content_type = (response.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return None
    try:
        reason = ErrorBody.model_validate(response.json(), strict=True, extra=TOLERATED_EXTRA).error
    except ValueError:  # not JSON, or not the collector's shape (pydantic's ValidationError is one)
        return None
    # A short token as the collector writes them, never free text from whoever answered.
    token = 0 < len(reason) <= 64 and reason.isascii() and reason.replace("_", "").isalnum()
    return reason if token else None


def _item_results(response: Response) -> list[IngestItemResult] | None:
    """The items of an ingest answer (:class:`IngestResponse`), read one by one and strictly (an index is an
    int, not "0"): an item that does not fit is left out, so its row stays pending and is sent again, while
    the others are applied; a newer collector's status an older agent does not know costs a retry, not the
    batch. None when the answer is not the contract's at all."""
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return None
    results = []
    for item in data["results"]:
        try:
            results.append(IngestItemResult.model_validate(item, strict=True, extra=TOLERATED_EXTRA))
        except ValueError:  # pydantic's ValidationError is one
            continue
    return results


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


class _BatchBody:
    """``{"measurements": [envelope, ...]}`` as JSON pieces, each made when the HTTP client reads it:
    a batch can be megabytes, and whole copies of it (a string, its bytes, the pieces) were the agent's
    memory peak. Iterable again for each attempt."""

    def __init__(self, batch: list[QueuedMeasurement]) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"measurements": ['
        for index, row in enumerate(self.batch):
            envelope = json.dumps(row.envelope.model_dump()).encode()
            yield b", " + envelope if index else envelope
        if isinstance(self.batch, SealedBatch):  # the token the batch spends (agent/batches.py)
            yield b'], "token": ' + json.dumps(self.batch.token.model_dump()).encode() + b"}"
        else:
            yield b"]}"


class Uploader:
    def __init__(
        self,
        queue: MeasurementQueue,
        collector_urls: Sequence[str | CollectorAddress],
        session: HttpClient,
        *,
        batch_size: int = 50,
        batch_bytes: int = 4 * 1024 * 1024,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_failed_batches: int = 3,
        batches: TokenBatches | None = None,
        only: Collection[str] | None = None,
    ) -> None:
        if not collector_urls:
            raise ValueError("no collector URL to upload to")
        self.queue = queue
        self.collector_urls = as_addresses(collector_urls)  # tried in order, each by its own route
        self.session = session
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.SystemRandom()
        self.sleep = sleep
        self.max_failed_batches = max(1, max_failed_batches)
        # Unlinkable mode (the default, issue 12): every batch spends a token and is signed by its own
        # ephemeral key; None: identified mode, the rows are signed already by the long-term key.
        self.batches = batches
        # Only these measurements (a confirmation pass's, sent at once), not everything that waits: the rest
        # keeps its random delay after the probes (agent/daemon.py).
        self.only = frozenset(only) if only is not None else None

    def _next_batch(self, after: int) -> list[QueuedMeasurement]:
        batch: list[QueuedMeasurement] = []
        size = 0
        while rows := self.queue.pending(self.batch_size, after=after, unbatched=self.batches is not None):
            for row in rows:
                after = row.row_id
                if self.only is not None and row.measurement_uid not in self.only:
                    continue
                if batch and (len(batch) >= self.batch_size or size + len(row.payload) > self.batch_bytes):
                    return batch
                batch.append(row)
                size += len(row.payload)
            if self.only is None or len(batch) >= self.batch_size:
                return batch
        return batch

    def _wanted(self, batch: SealedBatch) -> bool:
        return self.only is None or all(row.measurement_uid in self.only for row in batch)

    async def upload_pending(self) -> UploadReport:
        """One pass over what is pending now. A batch that fails every attempt stays pending and the next
        batch is tried; ``max_failed_batches`` failures in a row end the pass (the rest waits for the
        next one). Records the outcome for ``status``."""
        report = UploadReport()
        after = 0
        failed_in_a_row = 0
        # Batches sealed before (a crash, a failed attempt) go first, exactly as they were sealed.
        resent: list[list[QueuedMeasurement]] = (
            [b for b in self.batches.open_batches() if self._wanted(b)] if self.batches else []
        )
        while batch := (resent.pop(0) if resent else self._next_batch(after)):
            if not isinstance(batch, SealedBatch):
                after = batch[-1].row_id
                if self.batches is not None:
                    sealed = self.batches.seal(batch)
                    if sealed is None:
                        report.last_error = NO_TOKENS
                        break
                    batch = sealed
            if await self._deliver(batch, report):
                failed_in_a_row = 0
                continue
            failed_in_a_row += 1
            if failed_in_a_row >= self.max_failed_batches:
                break
        report.still_pending = self.queue.counts()["pending"]
        self.queue.set_meta(LAST_UPLOAD_KEY, report.as_dict())
        if report.last_error:
            self.queue.set_meta(
                LAST_UPLOAD_ERROR_KEY, {"at": format_utc(utc_now()), "error": report.last_error}
            )
        if isinstance(self.session, CollectorSession) and len(self.session.attempts):
            self.queue.set_meta(ATTEMPTS_KEY, {"attempts": self.session.attempts.as_records()})
        return report

    async def _deliver(self, batch: list[QueuedMeasurement], report: UploadReport) -> bool:
        """Deliver one batch; False when every collector failed every attempt."""
        outcome: _Answered | _Retry | _Refused = _Retry("not tried")
        for attempt in range(self.policy.max_attempts):
            retry_after: float | None = None
            for base in self.collector_urls:
                outcome = await self._post(base, batch)
                report.requests += 1
                if isinstance(outcome, _Answered):
                    self._apply(batch, outcome.results, report)
                    if isinstance(batch, SealedBatch) and self.batches is not None:
                        self.batches.close(batch)
                    return True
                if isinstance(outcome, _Refused):
                    return await self._narrow(batch, outcome, report)
                if self._token_refused(batch, outcome, report):
                    return False
                retry_after = outcome.retry_after if outcome.retry_after is not None else retry_after
                log.info("upload to %s failed: %s", base.label, outcome.error)
            if attempt + 1 < self.policy.max_attempts:
                await self.sleep(self.policy.delay(attempt, self.rng, retry_after))
        assert isinstance(outcome, _Retry)
        self.queue.record_failure([row.measurement_uid for row in batch], outcome.error)
        report.last_error = outcome.error
        return False

    def _token_refused(
        self, batch: list[QueuedMeasurement], outcome: _Retry | _Refused, report: UploadReport
    ) -> bool:
        """The collector refused the batch's token (forged_token, wrong_epoch, double_spend, ...): nothing
        of it was stored; the batch is dissolved and its rows wait for a new batch and token."""
        reason = outcome.error.rsplit(" ", 1)[-1]
        if not (isinstance(batch, SealedBatch) and self.batches is not None and reason in TOKEN_REFUSALS):
            return False
        self.batches.dissolve(batch, reason)
        report.last_error = outcome.error
        return True

    async def _narrow(self, batch: list[QueuedMeasurement], refused: _Refused, report: UploadReport) -> bool:
        if isinstance(batch, SealedBatch) and self.batches is not None:
            # Refused as a whole, so nothing was stored and the token not spent; each part is a new
            # batch with a token of its own.
            self.batches.dissolve(batch, refused.error)
        if len(batch) == 1:
            self._quarantine(batch[0], refused.error, report)
            return True
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            part = self.batches.seal(half) if self.batches is not None else half
            if part is None or not await self._deliver(part, report):
                return False
        return True

    async def _post(
        self, base: CollectorAddress, batch: list[QueuedMeasurement]
    ) -> _Answered | _Retry | _Refused:
        outcome = await self._post_once(base, batch)
        failure = None if isinstance(outcome, _Answered) else outcome.error.removeprefix(f"{base.host}: ")
        record_attempt(self.session, "upload", base, failure)
        return outcome

    async def _post_once(
        self, base: CollectorAddress, batch: list[QueuedMeasurement]
    ) -> _Answered | _Retry | _Refused:
        host = base.host
        route = route_for(self.session, base)
        # Through Tor, each upload request gets credentials of its own, hence a circuit of its own: the
        # collector cannot tell that two batches came by one circuit (Tor's IsolateSOCKSAuth).
        group = self.session.new_stream_group() if route.isolate else None
        try:
            url, body = api_url(base, "measurements"), _BatchBody(batch)
            response = await self.session.request(
                "POST", url, body=body, content_type="application/json", route=route, stream_group=group
            )
        except HttpClientError as exc:
            return _Retry(f"{host}: {exc.failure}")
        if response.status == 200:
            results = _item_results(response)
            if results is None:  # not JSON, or not the contract's answer: nothing in it is trusted
                return _Retry(f"{host}: {BAD_ANSWER}")
            return _Answered(results)
        reason = _collector_error(response)
        if response.status in _REFUSAL_STATUSES and reason in CONTENT_REFUSALS:
            return _Refused(f"http_{response.status} {reason}")
        # Anything else (5xx, 429, a blockpage's 403, a portal's 302, a proxy's 413...) may pass: retry.
        # Only the collector's own reason is echoed; a middlebox's text is not ours to record.
        error = f"{host}: http_{response.status} {reason or ''}".rstrip()
        return _Retry(error, _retry_after(response.header("Retry-After")))

    def _apply(
        self, batch: list[QueuedMeasurement], results: list[IngestItemResult], report: UploadReport
    ) -> None:
        by_uid = {row.measurement_uid: row for row in batch}
        delivered: list[str] = []
        answered: set[str] = set()
        for item in results:
            row = by_uid.get(item.measurement_uid or "")
            if row is None and item.index < len(batch):
                row = batch[item.index]
            if row is None or row.measurement_uid in answered:
                continue
            if item.status == "rejected":  # uid_conflict too: the collector holds another measurement
                self._quarantine(row, item.reason or "rejected", report)
            else:  # accepted, or duplicate (these very bytes were stored before): the collector has it
                delivered.append(row.measurement_uid)
                report.accepted += item.status == "accepted"
                report.duplicates += item.status == "duplicate"
            answered.add(row.measurement_uid)
        self.queue.mark_sent(delivered)
        unanswered = [uid for uid in by_uid if uid not in answered]
        if unanswered:
            self.queue.record_failure(unanswered, "the collector did not answer for this measurement")

    def _quarantine(self, row: QueuedMeasurement, reason: str, report: UploadReport) -> None:
        self.queue.quarantine(row.measurement_uid, reason)
        report.quarantined += 1
        report.quarantine_reasons[reason] = report.quarantine_reasons.get(reason, 0) + 1

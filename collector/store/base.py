"""The one storage interface both backends implement, and the pieces they share.

Nothing here (or in any table) identifies a volunteer: there is no column for an address. The envelope's
signature and public key are kept beside each measurement so that an operator can re-verify it; exports
never read them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Protocol, runtime_checkable

from gatewatch.analysis.networks import Observation
from gatewatch.core.measurement import as_utc
from gatewatch.core.vocabulary import SCHEME_LONGTERM

__all__ = [
    "BatchOutcome",
    "CursorError",
    "DoubleSpend",
    "IssuanceRefused",
    "IssuerKeyRecord",
    "TokenSpend",
    "as_utc",
    "MeasurementFilter",
    "Store",
    "StoreError",
    "StoredMeasurement",
    "UnstorableError",
    "decode_cursor",
    "encode_cursor",
    "filter_sql",
    "from_micros",
    "iterate_pages",
    "to_micros",
]

# The server's verdict, flattened to text so that it filters and groups like any other column.


@dataclass(frozen=True)
class StoredMeasurement:
    measurement_uid: str
    received_at: datetime  # UTC
    measurement_start_time: datetime  # UTC
    probe_cc: str  # "XL"
    probe_asn: str  # "AS64501"
    test_name: str
    input: str
    domain: str  # hostname of input
    blocking: str  # one of vocabulary.BLOCKING_LABELS: the server's verdict, never the agent's
    anomaly: bool
    technique: str | None
    fingerprint_key: str | None
    verdict_json: str  # the server's Verdict as JSON
    payload: bytes  # the exact measurement JSON bytes that were signed
    flags: tuple[str, ...] = ()  # e.g. ("asn_mismatch",)
    # How the payload is signed (vocabulary.SIGNATURE_SCHEMES). With a blind token (issue 12): the
    # per-batch ephemeral key's signature, that key, and the token (prefix || RSA signature) of its epoch
    # and issuer key, all exported so that anyone can re-verify. Rows signed by a long-term key keep
    # these empty (that signature and key stay in the separate ``envelopes`` table, never exported).
    signature_scheme: str = SCHEME_LONGTERM
    signature: bytes | None = None
    ephemeral_key: bytes | None = None
    token: bytes | None = None
    token_epoch: int | None = None
    token_key_id: str | None = None

    @cached_property
    def observation(self) -> Observation:
        """What attribution reads of this row, made once however many consumers read the row (the
        interference aggregate, the confirmation board). Not a field: never stored, compared or exported."""
        return Observation.from_row(self)


@dataclass(frozen=True)
class MeasurementFilter:
    probe_cc: str | None = None
    probe_asn: str | None = None
    test_name: str | None = None
    input: str | None = None
    domain: str | None = None
    since: datetime | None = None  # inclusive, on measurement_start_time
    until: datetime | None = None  # exclusive
    anomaly: bool | None = None
    blocking: str | None = None


class StoreError(RuntimeError):
    """The store could not do what was asked (unreachable, I/O error): the server's fault."""


class UnstorableError(ValueError):
    """The backend refuses the data itself (PostgreSQL: a NUL in a text column): the submitter's fault, not
    the store's. Nothing of that call was stored; the same rows sent one at a time show which is to blame."""


@dataclass(frozen=True)
class TokenSpend:
    """A batch's token, to be marked spent in the same transaction as the batch's rows."""

    spent_id: bytes  # sha256 over the token's signed message: unique per token
    batch_digest: bytes  # what the batch held, to tell an identical resend from a second spending
    epoch: int
    key_id: str


@dataclass(frozen=True)
class BatchOutcome:
    inserted: list[bool]  # per row: True = new, False = duplicate uid
    replayed: bool = False  # the token was spent already, on this very batch (a resend)


class DoubleSpend(Exception):
    """The token was spent already on a different batch: nothing of this batch was stored."""


@dataclass(frozen=True)
class IssuerKeyRecord:
    epoch: int
    key_id: str
    public_key: bytes  # DER SubjectPublicKeyInfo
    private_key: bytes | None  # PKCS#8 PEM; None once the epoch's issuance is over (retired)


class IssuanceRefused(Exception):
    """Tokens cannot be issued; ``reason`` is a vocabulary word (quota, replayed nonce, not enrolled)."""

    def __init__(self, reason: str, remaining: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.remaining = remaining


class CursorError(ValueError):
    """A pagination cursor that this store did not hand out (the client's fault)."""


@runtime_checkable
class Store(Protocol):
    async def insert_many(
        self, rows: Sequence[StoredMeasurement], envelopes: Sequence[tuple[bytes, bytes]]
    ) -> list[bool]:
        """Insert rows with their (signature, public_key); True = inserted, False = duplicate uid.

        Everything is committed durably when this returns: only then may the submitter be told. Raises
        :class:`UnstorableError` (nothing stored) when a row holds what this backend cannot store, and
        :class:`StoreError` when the store itself fails."""
        ...

    async def insert_batch(
        self,
        rows: Sequence[StoredMeasurement],
        envelopes: Sequence[tuple[bytes, bytes] | None],
        spend: TokenSpend | None,
    ) -> BatchOutcome:
        """As :meth:`insert_many`, and mark ``spend``'s token spent in the same transaction. A token spent
        already on the same batch digest is a replay: the rows are inserted as usual (duplicates, mostly).
        On another digest, raises :class:`DoubleSpend` and stores nothing: of two collectors racing one
        token, exactly one succeeds. An envelope of None (a token-signed row) writes no envelopes row."""
        ...

    async def issuer_keys(self) -> list[IssuerKeyRecord]:
        """Every issuer key, oldest epoch first."""
        ...

    async def add_issuer_key(self, record: IssuerKeyRecord) -> IssuerKeyRecord:
        """Keep ``record`` unless its epoch has a key already; the epoch's key (first one wins)."""
        ...

    async def retire_issuer_keys(self, before_epoch: int) -> int:
        """Forget the private keys of epochs before ``before_epoch`` (the public keys stay)."""
        ...

    async def charge_tokens(
        self, key_hash: bytes, epoch: int, count: int, quota: int, nonce: bytes, enrol: bool, now: datetime
    ) -> int:
        """Count ``count`` tokens against the key's quota for ``epoch`` and remember the request's nonce,
        in one transaction; the tokens left. Raises :class:`IssuanceRefused` (nothing counted) when the
        nonce was seen, the key is not enrolled (and ``enrol`` is False), or the quota would be passed.
        Nonces older than a day are forgotten."""
        ...

    async def stored_payloads(self, uids: Sequence[str]) -> dict[str, bytes]:
        """The signed payload stored under each of ``uids`` that is stored (absent ones are left out): what
        tells a byte-identical resend (a duplicate) from another measurement reusing a uid (a conflict)."""
        ...

    async def page(
        self, f: MeasurementFilter, cursor: str | None, limit: int
    ) -> tuple[list[StoredMeasurement], str | None]:
        """Rows ordered by (measurement_start_time, measurement_uid) after ``cursor``; the next cursor or
        None at the end."""
        ...

    def iterate(self, f: MeasurementFilter, batch: int = 1000) -> AsyncIterator[StoredMeasurement]:
        """Every matching row in page order, holding at most one batch in memory."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def encode_cursor(row: StoredMeasurement) -> str:
    """Opaque to clients; it is the position of the last row they saw."""
    position = [as_utc(row.measurement_start_time).isoformat(), row.measurement_uid]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, uid = json.loads(raw)
        start = datetime.fromisoformat(when)
        if not isinstance(uid, str) or start.tzinfo is None:
            raise CursorError("malformed cursor")
        return as_utc(start), uid  # as_utc: a ValueError, not an OverflowError, at the calendar's edge
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CursorError("malformed cursor") from exc


async def iterate_pages(store: Store, f: MeasurementFilter, batch: int) -> AsyncIterator[StoredMeasurement]:
    """Keyset pagination: memory stays at one batch however many rows match, and no transaction or server
    cursor is held open while a slow client reads an export."""
    cursor: str | None = None
    while True:
        rows, cursor = await store.page(f, cursor, batch)
        for row in rows:
            yield row
        if cursor is None:
            return


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    return (as_utc(value) - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    # Positional: timedelta(days, seconds, microseconds) skips keyword parsing (a third cheaper per row read).
    return EPOCH + timedelta(0, 0, value)


def filter_sql(
    f: MeasurementFilter,
    placeholder: Callable[[int], str],
    time_param: Callable[[datetime], object],
    after: tuple[datetime, str] | None = None,
) -> tuple[str, list[object]]:
    """The WHERE clause (possibly empty) and its parameters, for both SQL dialects; ``after`` is the
    position (start time, uid) of the last row already read, from which the scan continues.

    ``placeholder(n)`` spells the n-th parameter (``?`` or ``$n``); ``time_param`` converts a time into the
    column's representation."""
    clauses: list[str] = []
    params: list[object] = []

    def add(sql: str, value: object) -> None:
        params.append(value)
        clauses.append(sql.format(placeholder(len(params))))

    for column in ("probe_cc", "probe_asn", "test_name", "input", "domain", "blocking"):
        value = getattr(f, column)
        if value is not None:
            add(f"{column} = {{}}", value)
    if f.anomaly is not None:
        add("anomaly = {}", f.anomaly)
    # One lower bound on the time only, the tighter of ``since`` and the cursor: given both, a planner may
    # start its index range at ``since`` and re-scan every earlier page's rows on each page (an export with
    # a ``since`` filter grew quadratically). A cursor at or after ``since`` implies it; a cursor before
    # ``since`` (not one this filter handed out) is implied by it.
    if after is not None and (f.since is None or as_utc(after[0]) >= as_utc(f.since)):
        params.extend([time_param(after[0]), after[1]])
        first, second = placeholder(len(params) - 1), placeholder(len(params))
        clauses.append(f"(measurement_start_time, measurement_uid) > ({first}, {second})")
    elif f.since is not None:
        add("measurement_start_time >= {}", time_param(f.since))
    if f.until is not None:
        add("measurement_start_time < {}", time_param(f.until))
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return where, params

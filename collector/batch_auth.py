"""Who may submit a batch (issue 12): a blind-signed token per batch, or, where the operator allows it, an
identified agent's long-term key.

A batch with a token is accepted only if the token verifies under the published issuer key of its
epoch, that epoch is spendable now (current, or within the overlap after it), the token was never spent
on another batch (the store's spent-token table, written in the same transaction as the batch's rows),
and each measurement is signed by the token's ephemeral key (an item signed by any other key is rejected
``bad_signature``). Refusals of the whole batch (:data:`~gatewatch.core.vocabulary.TOKEN_REFUSALS`) are
4xx answers with their reason; nothing of such a batch is stored, and the agent makes a new batch.

An identical resend of a batch already stored under its token (a lost answer, a crash before the agent
recorded it) is a replay, not a double spend: the batch is judged again and its stored items are answered
``duplicate``, so the agent marks them delivered. Identical means the same envelopes in the same order
(the batch digest).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gatewatch.core.batch_token import BatchTokenError, TokenParts, verify_token
from gatewatch.core.vocabulary import (
    DOUBLE_SPEND,
    FORGED_TOKEN,
    TOKEN_REQUIRED,
    UNKNOWN_IDENTIFIED_KEY,
    UNKNOWN_KEY,
    WRONG_EPOCH,
)
from gatewatch.core.wire import BatchToken

from .appkeys import SETTINGS_KEY
from .issuer import ISSUER_KEY
from .judging import token_fields
from .metrics import TOKEN_METRICS_KEY
from .store.base import StoredMeasurement, TokenSpend

__all__ = [
    "BATCH_AUTH_KEY",
    "REPLAYED_KEY",
    "BatchAuth",
    "BatchRefused",
    "authorise",
    "batch_digest",
    "check_items",
    "count_batch",
    "digest_of_items",
    "item_digest",
    "token_row",
]

_STATUS = {FORGED_TOKEN: 403, WRONG_EPOCH: 403, UNKNOWN_KEY: 403, TOKEN_REQUIRED: 403}
_STATUS |= {UNKNOWN_IDENTIFIED_KEY: 403, DOUBLE_SPEND: 409}


def count_batch(request: web.Request, result: str | None) -> None:
    """Count the request's batch in ``gatewatch_ingest_batches_total``: under ``result`` (a refusal,
    ``replayed_batch``), or by how it was signed (None)."""
    if result is None:
        result = "identified" if request[BATCH_AUTH_KEY].token is None else "token"
    request.app[TOKEN_METRICS_KEY].batches.labels(result=result).inc()


class BatchRefused(Exception):
    """The batch as a whole is refused for how it is signed; ``reason`` is a token refusal."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.status = _STATUS[reason]


@dataclass(frozen=True)
class BatchAuth:
    """How a batch is signed: by a token's ephemeral key (``token`` set), or identified (None). ``spend``,
    what the store marks spent with the batch's rows, is set once the checks have hashed the batch
    (:meth:`with_digest`): the hashing runs beside the signatures' verification, off the event loop."""

    token: TokenParts | None
    spend: TokenSpend | None = None

    def with_digest(self, digest: bytes) -> BatchAuth:
        """With its token's spend, for a batch whose :func:`batch_digest` is ``digest`` (identified: as
        is)."""
        token = self.token
        if token is None:
            return self
        return replace(self, spend=TokenSpend(token.spent_id, digest, token.epoch, token.key_id))


BATCH_AUTH_KEY: web.RequestKey[BatchAuth] = web.RequestKey("gatewatch_batch_auth", BatchAuth)
REPLAYED_KEY: web.RequestKey[bool] = web.RequestKey("gatewatch_replayed_batch", bool)  # a resend


def batch_digest(raw_items: Sequence[Any]) -> bytes:
    """What identifies a batch's content: its envelopes, in order (a resend sends the same ones). Each is
    hashed as its canonical JSON (sorted keys, no spaces, ASCII): stored digests compare across versions."""
    return digest_of_items(item_digest(item) for item in raw_items)


def item_digest(item: Any) -> bytes:
    """The SHA-256 of one item's canonical JSON: :func:`batch_digest` hashes these, in the batch's order
    (ingest's checks compute them item by item, beside each signature's verification)."""
    digest = _plain_envelope_digest(item)
    if digest is None:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.sha256(text.encode()).digest()
    return digest


def digest_of_items(item_digests: Iterable[bytes]) -> bytes:
    """:func:`batch_digest` from its items' :func:`item_digest`, in the batch's order."""
    digest = hashlib.sha256()
    for one in item_digests:
        digest.update(one)
    return digest.digest()


_ENVELOPE_KEYS = ("format", "payload", "public_key", "signature")  # sorted
# What JSON writes as it is inside a string: printable ASCII but the quote and the backslash (base64 is).
_VERBATIM = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
_PIECES = tuple(f'{"{" if i == 0 else ","}"{key}":"'.encode() for i, key in enumerate(_ENVELOPE_KEYS))


def _plain_envelope_digest(item: Any) -> bytes | None:
    """The SHA-256 of the canonical JSON of an envelope whose four values are strings JSON writes as they
    are (:data:`_VERBATIM` only: base64), hashed piece by piece without the encoder (several times faster
    for the 5 kB of a measurement); None for anything else. Equal to hashing ``json.dumps`` of it (tested)."""
    if type(item) is not dict or len(item) != len(_ENVELOPE_KEYS):
        return None
    digest = hashlib.sha256()
    for piece, key in zip(_PIECES, _ENVELOPE_KEYS, strict=True):
        value = item.get(key)
        if type(value) is not str or not value.isascii():  # isascii: constant time
            return None
        data = value.encode("ascii")
        if data.translate(None, _VERBATIM):  # something left: a character JSON would escape
            return None
        digest.update(piece)
        digest.update(data)
        digest.update(b'"')
    digest.update(b"}")
    return digest.digest()


async def authorise(request: web.Request, token_value: Any) -> BatchAuth:
    """Check the batch's token (or that identified batches are accepted); raise :class:`BatchRefused`.
    The spend is left to :meth:`BatchAuth.with_digest`."""
    settings = request.app[SETTINGS_KEY]
    if token_value is None:
        if settings.accept_identified or settings.identified_keys:
            return BatchAuth(None)
        raise BatchRefused(TOKEN_REQUIRED, "this collector takes batches with a token only")
    try:
        wire = BatchToken.model_validate(token_value)
        parts = TokenParts.decode(wire.epoch, wire.key_id, wire.ephemeral_public_key, wire.token)
    except ValidationError:
        raise BatchRefused(FORGED_TOKEN, "not a token") from None
    except BatchTokenError as exc:
        raise BatchRefused(exc.reason, str(exc)) from None
    issuer = request.app[ISSUER_KEY]
    key = await issuer.by_key_id(parts.key_id)
    if key is None:
        raise BatchRefused(UNKNOWN_KEY, "no published issuer key has this id")
    if key.epoch != parts.epoch or not issuer.spendable(parts.epoch):
        raise BatchRefused(WRONG_EPOCH, f"tokens of epoch {parts.epoch} are not spendable now")
    try:
        verify_token(parts, key.public_key)
    except BatchTokenError as exc:
        raise BatchRefused(exc.reason, str(exc)) from None
    return BatchAuth(parts)


def check_items(request: web.Request, auth: BatchAuth, public_keys: Sequence[bytes | None]) -> list[bool]:
    """Per verified item (its envelope's key; None when not verified): whether its key may sign in this
    batch. With a token, only the ephemeral key; identified, any key or the listed ones (an unlisted one
    refuses the batch)."""
    if auth.token is not None:
        ephemeral = auth.token.ephemeral_public_key
        return [key is not None and key == ephemeral for key in public_keys]
    listed = request.app[SETTINGS_KEY].identified_keys
    if listed:
        allowed = {_b64decode(k) for k in listed}
        if any(key is not None and key not in allowed for key in public_keys):
            raise BatchRefused(UNKNOWN_IDENTIFIED_KEY, "this long-term key is not an identified probe here")
    return [key is not None for key in public_keys]


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value)


def token_row(row: StoredMeasurement, signature: bytes, token: TokenParts) -> StoredMeasurement:
    """The stored row of a token-signed item: its signature, the ephemeral key and the token beside it
    (ingest's checks write them into the row as they build it, in its threads and in the check worker
    processes alike; this is the same as a copy, what the tests compare those rows with)."""
    return replace(row, **token_fields(signature, token))

"""The agent's token wallet (issue 12): issuer keys pinned per epoch, and tokens fetched ahead of need.

Each token comes with its own fresh Ed25519 key (the *ephemeral* key): the token's message binds the
epoch, the issuer key's id and that ephemeral public key, and it is blinded before the collector signs
it, so the collector cannot tell later which of its signatures a batch spends. The wallet lives in the
queue's SQLite file (same durability: WAL, ``synchronous=FULL``); an ephemeral private key is deleted
when its batch is answered.

Key consistency (RFC 9576): an issuer key is taken from the public, unauthenticated ``GET
/api/v1/issuer-keys`` and pinned for its epoch; a different key for an epoch already pinned is refused
(a collector handing this agent a key of its own could recognise its tokens), and the issuance answer
must name the pinned key.

Top-up policy (:class:`TopUpPolicy`): when fewer than ``low`` usable tokens remain, ask for a random
number that brings the wallet to between ``low`` and ``high``. The daemon tops up at the start of a pass,
before measuring, so issuance and the uploads that spend tokens are minutes apart; tokens are spent in
random order, not the order fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pydantic import ValidationError

from gatewatch.core import blindrsa
from gatewatch.core.batch_token import PREFIX_BYTES, token_message
from gatewatch.core.envelope import public_key_bytes
from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.wire import (
    MAX_TOKENS_PER_REQUEST,
    IssuerKey,
    IssuerKeysResponse,
    TokenRequest,
    TokenRequestBody,
    TokenResponse,
)

from .addresses import CollectorAddress
from .collector_api import BAD_ANSWER, TOLERATED_EXTRA, Address, api_url, route_for
from .http_client import HttpClient, HttpClientError, Response
from .queue import MeasurementQueue

__all__ = ["HeldToken", "TokenWallet", "TopUpPolicy", "WalletError", "solve_proof_of_work"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issuer_keys (
    epoch INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    spki BLOB NOT NULL,
    valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    ephemeral_key BLOB NOT NULL,  -- the raw 32-byte Ed25519 private key of the batch that spends it
    token BLOB NOT NULL,          -- prefix || RSA signature
    valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL
);
"""
POW_CONTEXT = b"gatewatch-pow/1"


class WalletError(RuntimeError):
    """Tokens could not be had (no collector answered, a key changed, issuance refused): a short reason."""


@dataclass(frozen=True)
class TopUpPolicy:
    low: int = 4
    high: int = 16

    def wanted(self, held: int, rng: random.Random) -> int:
        if held >= self.low:
            return 0
        return rng.randint(max(1, self.low - held), max(1, self.high - held))


@dataclass(frozen=True)
class HeldToken:
    row_id: int
    epoch: int
    key_id: str
    ephemeral_key: Ed25519PrivateKey
    token: bytes


def solve_proof_of_work(public_key: bytes, bits: int, limit: int = 1 << 28) -> str:
    """A proof for the collector's ``proof_of_work`` enrolment (bounded: raises after ``limit`` tries)."""
    for counter in range(limit):
        proof = format(counter, "x")
        digest = int.from_bytes(hashlib.sha256(POW_CONTEXT + public_key + proof.encode()).digest(), "big")
        if digest >> (256 - bits) == 0:
            return proof
    raise WalletError("no proof of work found")


def _host(base: Address) -> str:
    if isinstance(base, CollectorAddress):
        return base.host
    return urlsplit(base).hostname or base


async def _call(session: HttpClient, method: str, base: Address, path: str, body: Any = None) -> Response:
    """One collector call by ``base``'s route (a proxy, Tor, a front), on a circuit of its own under Tor:
    token traffic shares nothing with the uploads that spend the tokens."""
    route = route_for(session, base)
    group = session.new_stream_group() if route.isolate else None
    return await session.request(method, api_url(base, path), json_body=body, route=route, stream_group=group)


class TokenWallet:
    """Issuer keys and unspent tokens, in the queue's database."""

    def __init__(self, queue: MeasurementQueue, *, rng: random.Random | None = None) -> None:
        self.queue = queue
        self.rng = rng or random.SystemRandom()
        queue.db.executescript(_SCHEMA)

    # -- keys ------------------------------------------------------------------------------------------

    def pin(self, key: IssuerKey) -> bool:
        """Pin ``key`` for its epoch; False (and nothing changed) when another key is pinned for it."""
        with self.queue.transaction() as db:
            row = db.execute("SELECT key_id FROM issuer_keys WHERE epoch = ?", (key.epoch,)).fetchone()
            if row is not None:
                return bool(row[0] == key.key_id)
            db.execute(
                "INSERT INTO issuer_keys (epoch, key_id, spki, valid_from, valid_until)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    key.epoch,
                    key.key_id,
                    base64.b64decode(key.public_key),
                    format_utc(key.valid_from),
                    format_utc(key.valid_until),
                ),
            )
        return True

    def pinned(self, epoch: int) -> tuple[str, bytes, str, str] | None:
        row = self.queue.db.execute(
            "SELECT key_id, spki, valid_from, valid_until FROM issuer_keys WHERE epoch = ?", (epoch,)
        ).fetchone()
        return (row[0], bytes(row[1]), row[2], row[3]) if row else None

    # -- tokens ----------------------------------------------------------------------------------------

    def usable(self, now: datetime | None = None) -> int:
        when = format_utc(now or utc_now())
        (count,) = self.queue.db.execute(
            "SELECT count(*) FROM tokens WHERE valid_from <= ? AND valid_until > ?", (when, when)
        ).fetchone()
        return int(count)

    def drop_expired(self, now: datetime | None = None) -> int:
        with self.queue.transaction() as db:
            return db.execute(
                "DELETE FROM tokens WHERE valid_until <= ?", (format_utc(now or utc_now()),)
            ).rowcount

    def pick(self, now: datetime | None = None) -> HeldToken | None:
        """A usable token, chosen at random (not in the order fetched). It stays in the wallet until
        :meth:`spend_into` moves it into a batch."""
        when = format_utc(now or utc_now())
        rows = self.queue.db.execute(
            "SELECT id, epoch, key_id, ephemeral_key, token FROM tokens"
            " WHERE valid_from <= ? AND valid_until > ? ORDER BY id",
            (when, when),
        ).fetchall()
        if not rows:
            return None
        row_id, epoch, key_id, ephemeral, token = self.rng.choice(rows)
        return HeldToken(
            row_id, epoch, key_id, Ed25519PrivateKey.from_private_bytes(bytes(ephemeral)), bytes(token)
        )

    def add(self, epoch: int, key_id: str, ephemeral: Ed25519PrivateKey, token: bytes) -> None:
        pinned = self.pinned(epoch)
        if pinned is None or pinned[0] != key_id:
            raise WalletError(f"no pinned issuer key {key_id[:12]} for epoch {epoch}")
        raw = ephemeral.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        with self.queue.transaction() as db:
            db.execute(
                "INSERT INTO tokens (epoch, key_id, ephemeral_key, token, valid_from, valid_until)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (epoch, key_id, raw, token, pinned[2], pinned[3]),
            )

    # -- fetching --------------------------------------------------------------------------------------

    async def fetch_keys(self, session: HttpClient, bases: Sequence[Address]) -> IssuerKeysResponse:
        """The published keys from the first collector that answers; every one pinned (or checked)."""
        failure = "no collector configured"
        for base in bases:
            try:
                response = await _call(session, "GET", base, "issuer-keys")
                if response.status != 200:
                    failure = f"{_host(base)}: http_{response.status}"
                    continue
                answer = IssuerKeysResponse.model_validate(response.json(), extra=TOLERATED_EXTRA)
            except HttpClientError as exc:
                failure = f"{_host(base)}: {exc.failure}"
                continue
            except ValueError:
                failure = f"{_host(base)}: {BAD_ANSWER}"
                continue
            changed = [key.epoch for key in answer.keys if not self.pin(key)]
            if changed:
                log.error("issuer key changed for epochs %s: not using them", changed)
            return answer
        raise WalletError(failure)

    async def top_up(
        self,
        session: HttpClient,
        bases: Sequence[Address],
        long_term: Ed25519PrivateKey,
        policy: TopUpPolicy | None = None,
        *,
        invite_code: str | None = None,
        pow_bits: int = 0,
    ) -> int:
        """Fetch tokens when fewer than the low-water mark are usable; how many were added."""
        self.drop_expired()
        wanted = (policy or TopUpPolicy()).wanted(self.usable(), self.rng)
        if not wanted:
            return 0
        answer = await self.fetch_keys(session, bases)
        epoch = answer.current_epoch
        pinned = self.pinned(epoch)
        published = next((k for k in answer.keys if k.epoch == epoch), None)
        if pinned is None or published is None or published.key_id != pinned[0]:
            raise WalletError(f"no consistent issuer key for epoch {epoch}")
        issuer_key = blindrsa.public_key_from_spki(pinned[1])
        added = 0
        while added < wanted:
            count = min(MAX_TOKENS_PER_REQUEST, wanted - added)
            added += await self._fetch(
                session, bases, long_term, epoch, pinned[0], issuer_key, count, invite_code, pow_bits
            )
        return added

    async def _fetch(
        self,
        session: HttpClient,
        bases: Sequence[Address],
        long_term: Ed25519PrivateKey,
        epoch: int,
        key_id: str,
        issuer_key: RSAPublicKey,
        count: int,
        invite_code: str | None,
        pow_bits: int,
    ) -> int:
        pending = []
        for _ in range(count):
            ephemeral = Ed25519PrivateKey.generate()
            prepared = blindrsa.prepare(token_message(epoch, key_id, public_key_bytes(ephemeral)))
            blinded, inverse = blindrsa.blind(issuer_key, prepared)
            pending.append((ephemeral, prepared, blinded, inverse))
        own = public_key_bytes(long_term)
        body = TokenRequestBody(
            public_key=base64.b64encode(own).decode(),
            epoch=epoch,
            key_id=key_id,
            blinded_messages=[base64.b64encode(p[2]).decode() for p in pending],
            timestamp=utc_now(),
            nonce=base64.b64encode(os.urandom(24)).decode(),
            invite_code=invite_code,
            proof_of_work=solve_proof_of_work(own, pow_bits) if pow_bits else None,
        )
        signed = json.dumps(body.model_dump(mode="json", exclude_none=True)).encode()
        request = TokenRequest(
            request=base64.b64encode(signed).decode(),
            signature=base64.b64encode(long_term.sign(signed)).decode(),
        )
        failure = "no collector configured"
        for base in bases:
            try:
                response = await _call(session, "POST", base, "tokens", request.model_dump())
            except HttpClientError as exc:
                failure = f"{_host(base)}: {exc.failure}"
                continue
            if response.status != 200:
                failure = f"{_host(base)}: http_{response.status} {_error(response.body)}".rstrip()
                if response.status in (403, 409, 429):
                    break  # the collector's answer about this key: another URL would say the same
                continue
            try:
                answer = TokenResponse.model_validate(response.json(), extra=TOLERATED_EXTRA)
            except (ValueError, ValidationError):
                failure = f"{_host(base)}: {BAD_ANSWER}"
                continue
            if answer.key_id != key_id or answer.epoch != epoch or len(answer.blind_signatures) != count:
                raise WalletError("the issuer answered with another key or count than asked")
            for (ephemeral, prepared, _, inverse), blind_signature in zip(
                pending, answer.blind_signatures, strict=True
            ):
                signature = blindrsa.finalize(
                    issuer_key, prepared, base64.b64decode(blind_signature), inverse
                )
                self.add(epoch, key_id, ephemeral, prepared[:PREFIX_BYTES] + signature)
            return count
        raise WalletError(failure)


def _error(body: bytes) -> str:
    try:
        error = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        return ""
    return error if isinstance(error, str) and error.replace("_", "").isalnum() and len(error) < 64 else ""

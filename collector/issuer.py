"""The token issuer's keys: one RSA key per weekly epoch, made by the collector, kept in the store.

Keys are made ahead (the current epoch's and the next one's), so that every collector on one store, and
every agent, sees the same key for an epoch before it starts (the first key stored for an epoch wins a
race between collectors). A key signs tokens only during its own epoch; afterwards its private half is
dropped from the store, while its public half stays published forever, so that old exports stay
verifiable. Tokens of an epoch are spendable until ``overlap`` after the epoch's end.

``GET /api/v1/issuer-keys`` publishes them all, unauthenticated: the same answer for everyone, which is
what lets an agent (and anyone auditing an export) check that it was not handed a key of its own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gatewatch.core import blindrsa
from gatewatch.core.batch_token import EPOCH_SECONDS, epoch_end, epoch_of, epoch_start, spendable
from gatewatch.core.wire import IssuerKey, IssuerKeysResponse

from .responses import model_response
from .store.base import IssuerKeyRecord, Store

__all__ = [
    "ISSUER_KEY",
    "ISSUER_KEYS_PATH",
    "VARIANT_NAME",
    "Clock",
    "EpochKey",
    "Issuer",
    "add_issuer_routes",
]

ISSUER_KEYS_PATH = "/api/v1/issuer-keys"
VARIANT_NAME = "RSABSSA-SHA384-PSS-Randomized"
log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EpochKey:
    epoch: int
    key_id: str
    public_key: RSAPublicKey
    spki: bytes
    private_key: RSAPrivateKey | None  # None once retired (or on a collector that never held it)


def _load(record: IssuerKeyRecord) -> EpochKey:
    private = None
    if record.private_key is not None:
        loaded = load_pem_private_key(record.private_key, password=None)
        if not isinstance(loaded, RSAPrivateKey):
            raise ValueError(f"issuer key of epoch {record.epoch} is not RSA")
        private = loaded
    return EpochKey(
        record.epoch,
        record.key_id,
        blindrsa.public_key_from_spki(record.public_key),
        record.public_key,
        private,
    )


def _new_record(epoch: int, bits: int) -> IssuerKeyRecord:
    private = blindrsa.generate_issuer_key(bits)
    public = private.public_key()
    return IssuerKeyRecord(
        epoch=epoch,
        key_id=blindrsa.key_id(public),
        public_key=blindrsa.public_key_to_spki(public),
        private_key=private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    )


class Issuer:
    """The epochs' keys as this collector knows them, refreshed from the store when time moves on."""

    def __init__(
        self, store: Store, *, overlap: timedelta, bits: int = 2048, clock: Clock = _utc_now
    ) -> None:
        self.store = store
        self.overlap = overlap
        self.bits = bits
        self.clock = clock
        self._keys: dict[int, EpochKey] = {}
        self._lock = asyncio.Lock()

    def current_epoch(self) -> int:
        return epoch_of(self.clock())

    async def refresh(self) -> None:
        """Make sure the current and the next epoch have keys; retire the private keys of past epochs."""
        async with self._lock:
            current = self.current_epoch()
            if current in self._keys and current + 1 in self._keys:
                return
            known = {r.epoch: r for r in await self.store.issuer_keys()}
            for epoch in (current, current + 1):
                if epoch not in known:
                    record = await asyncio.to_thread(_new_record, epoch, self.bits)
                    known[epoch] = await self.store.add_issuer_key(record)  # another collector may win
                    log.info("issuer key made", extra={"epoch": epoch, "key_id": known[epoch].key_id})
            if await self.store.retire_issuer_keys(current):
                known = {r.epoch: r for r in await self.store.issuer_keys()}
            self._keys = {epoch: _load(record) for epoch, record in known.items()}

    async def key(self, epoch: int) -> EpochKey | None:
        """The published key of ``epoch`` (None when it has none)."""
        await self.refresh()
        return self._keys.get(epoch)

    async def by_key_id(self, key_id: str) -> EpochKey | None:
        """The published key with this id (refreshed from the store when unknown: another collector may
        have made it)."""
        await self.refresh()
        found = next((k for k in self._keys.values() if k.key_id == key_id), None)
        if found is None:
            async with self._lock:
                self._keys = {r.epoch: _load(r) for r in await self.store.issuer_keys()}
            found = next((k for k in self._keys.values() if k.key_id == key_id), None)
        return found

    async def signing_key(self, epoch: int) -> EpochKey | None:
        """The key that issues tokens of ``epoch``: only the current and the next epoch issue."""
        await self.refresh()
        current = self.current_epoch()
        found = self._keys.get(epoch)
        if epoch not in (current, current + 1) or found is None or found.private_key is None:
            return None
        return found

    def spendable(self, epoch: int) -> bool:
        return spendable(epoch, self.clock(), self.overlap)

    async def published(self) -> IssuerKeysResponse:
        await self.refresh()
        return IssuerKeysResponse(
            variant=VARIANT_NAME,
            current_epoch=self.current_epoch(),
            epoch_seconds=EPOCH_SECONDS,
            keys=[
                IssuerKey(
                    epoch=k.epoch,
                    key_id=k.key_id,
                    public_key=base64.b64encode(k.spki).decode(),
                    valid_from=epoch_start(k.epoch),
                    issue_until=epoch_end(k.epoch),
                    valid_until=epoch_end(k.epoch) + self.overlap,
                )
                for k in sorted(self._keys.values(), key=lambda k: k.epoch)
            ],
        )


ISSUER_KEY: web.AppKey[Issuer] = web.AppKey("gatewatch_issuer", Issuer)


async def _issuer_keys(request: web.Request) -> web.Response:
    return model_response(await request.app[ISSUER_KEY].published())


def add_issuer_routes(app: web.Application) -> None:
    app.router.add_get(ISSUER_KEYS_PATH, _issuer_keys)

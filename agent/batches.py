"""Sealed upload batches (issue 12): one token and one ephemeral key per batch, recorded before it is sent.

Sealing a batch takes one token from the wallet, signs each measurement's exact queued bytes with the
token's ephemeral key, and records in one transaction the batch (its token), its items in order with their
signatures, and the token's removal from the wallet; the ephemeral private key is not kept past that. So
after a crash, a lost answer or a failed attempt, the next pass sends the *identical* batch again (same
envelopes, same order, same token): the collector answers it as a replay (its stored items
``duplicate``), never as a second spending, and nothing is lost or stored twice.

A batch is forgotten once the collector answered for it (:meth:`TokenBatches.close`), or dissolved when
the collector refused its token or its content as a whole (nothing of it was stored): its measurements
are then sealed again, in new batches, with new tokens.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace

from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.wire import BatchToken

from .queue import MeasurementQueue, QueuedMeasurement
from .tokens import TokenWallet

__all__ = ["SealedBatch", "TokenBatches"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    token TEXT NOT NULL  -- the BatchToken's JSON, as sent
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    measurement_uid TEXT NOT NULL UNIQUE,
    signature TEXT NOT NULL,  -- base64, by the batch's ephemeral key
    PRIMARY KEY (batch_id, position)
);
"""


class SealedBatch(list[QueuedMeasurement]):
    """A batch's rows, each carrying its ephemeral signature and key (so ``row.envelope`` is what is
    sent), and the token the batch spends."""

    def __init__(self, batch_id: int, token: BatchToken, rows: list[QueuedMeasurement]) -> None:
        super().__init__(rows)
        self.batch_id = batch_id
        self.token = token


class TokenBatches:
    def __init__(self, queue: MeasurementQueue, wallet: TokenWallet) -> None:
        self.queue = queue
        self.wallet = wallet
        queue.db.executescript(_SCHEMA)

    def open_batches(self) -> list[SealedBatch]:
        """Batches sealed earlier and not yet answered, oldest first, exactly as sealed."""
        sealed = []
        for batch_id, token_json in self.queue.db.execute(
            "SELECT id, token FROM batches ORDER BY id"
        ).fetchall():
            token = BatchToken.model_validate_json(token_json)
            items = self.queue.db.execute(
                "SELECT measurement_uid, signature FROM batch_items WHERE batch_id = ? ORDER BY position",
                (batch_id,),
            ).fetchall()
            rows = []
            for uid, signature in items:
                row = self.queue.get(uid)
                if row is None:  # pruned meanwhile: the batch cannot be sent as it was
                    break
                rows.append(replace(row, signature=signature, public_key=token.ephemeral_public_key))
            if len(rows) != len(items) or not rows or all(row.state != "pending" for row in rows):
                self._forget(batch_id)
                continue
            sealed.append(SealedBatch(batch_id, token, rows))
        return sealed

    def seal(self, rows: list[QueuedMeasurement]) -> SealedBatch | None:
        """Sign ``rows`` under a fresh token and record the batch durably; None when the wallet is empty."""
        held = self.wallet.pick()
        if held is None or not rows:
            return None
        ephemeral_b64 = base64.b64encode(held.ephemeral_key.public_key().public_bytes_raw()).decode()
        token = BatchToken(
            epoch=held.epoch,
            key_id=held.key_id,
            ephemeral_public_key=ephemeral_b64,
            token=base64.b64encode(held.token).decode(),
        )
        signed = [
            replace(
                row,
                signature=base64.b64encode(held.ephemeral_key.sign(row.payload)).decode(),
                public_key=ephemeral_b64,
            )
            for row in rows
        ]
        with self.queue.transaction() as db:
            cursor = db.execute(
                "INSERT INTO batches (created_at, token) VALUES (?, ?)",
                (format_utc(utc_now()), token.model_dump_json()),
            )
            batch_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO batch_items (batch_id, position, measurement_uid, signature)"
                " VALUES (?, ?, ?, ?)",
                [(batch_id, i, row.measurement_uid, row.signature) for i, row in enumerate(signed)],
            )
            db.execute("DELETE FROM tokens WHERE id = ?", (held.row_id,))
        return SealedBatch(batch_id, token, signed)

    def close(self, batch: SealedBatch) -> None:
        """The collector answered for the batch: forget it (its token is spent)."""
        self._forget(batch.batch_id)

    def dissolve(self, batch: SealedBatch, reason: str) -> None:
        """The collector refused the batch as a whole (nothing stored): its rows go back to be sealed anew."""
        log.info("batch refused (%s): its measurements will be sent in a new batch", reason)
        self._forget(batch.batch_id)

    def _forget(self, batch_id: int) -> None:
        with self.queue.transaction() as db:
            db.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

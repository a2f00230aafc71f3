"""The SQLite store's token tables: a batch's token and its spending are each written once to the file,
whatever the number of the batch's measurements (issue 16, stored bytes: an index must not copy them)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gatewatch.collector.store.base import TokenSpend
from gatewatch.collector.store.sqlite import SQLiteStore
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .test_stores import envelope_of, row


def _file_bytes(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the write-ahead log folded into the file
    finally:
        conn.close()
    return path.read_bytes()


async def test_a_batch_token_and_its_spending_are_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    token, ephemeral, spent_id = os.urandom(32 + 256), os.urandom(32), os.urandom(32)
    fields = dict(signature_scheme=SCHEME_BLIND_TOKEN, signature=os.urandom(64), ephemeral_key=ephemeral,
                  token=token, token_epoch=2900, token_key_id="ik-1")  # fmt: skip
    rows = [row(n, **fields) for n in range(5)]
    store = await SQLiteStore.open(str(path))
    try:
        spend = TokenSpend(spent_id, os.urandom(32), 2900, "ik-1")
        outcome = await store.insert_batch(rows, [envelope_of(r) for r in rows], spend)
        assert outcome.inserted == [True] * 5
    finally:
        await store.close()
    stored = _file_bytes(path)
    assert stored.count(token[32:]) == 1  # the RSA signature: in batch_tokens' row only
    assert stored.count(ephemeral) == 1
    assert stored.count(spent_id) == 1  # in spent_tokens' primary key only

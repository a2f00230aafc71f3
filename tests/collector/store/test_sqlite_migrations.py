"""Upgrading a SQLite store that holds data from an older schema to the current one: every row, envelope
and spent token survives as it was, old verdicts (JSON text) are read beside new ones (deflated)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatewatch.collector.store import MeasurementFilter
from gatewatch.collector.store.base import DoubleSpend, TokenSpend
from gatewatch.collector.store.migrations import SQLITE
from gatewatch.collector.store.sqlite import SQLiteStore, _row_values
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .test_stores import envelope_of, row

VERSION_BEFORE = 3


def token_of(batch: int) -> dict[str, object]:
    """A token-signed row's fields (batch 0: none, the long-term scheme)."""
    if batch == 0:
        return {}
    return dict(signature_scheme=SCHEME_BLIND_TOKEN, signature=b"g" * 64, ephemeral_key=bytes([batch]) * 32,
                token=bytes([batch]) * 288, token_epoch=2900 + batch, token_key_id=f"ik-{batch}")  # fmt: skip


def _database_at(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)")
    for number, statements in SQLITE:
        if number <= version:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
    return conn


async def test_upgrade_keeps_every_row_and_envelope(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_rows = [row(n, verdict_json=f'{{"blocking": false, "n": {n}}}', **token_of(n % 2)) for n in range(5)]
    conn = _database_at(path, VERSION_BEFORE)
    for n, r in enumerate(old_rows):
        values = list(_row_values(r))[:21]  # without token_ref: the token inline, as version 3 stored it
        values[12] = r.verdict_json  # the JSON text
        conn.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * len(values))})", values)
        conn.execute("INSERT INTO envelopes VALUES (?, ?, ?)", (r.measurement_uid, b"s%d" % n, b"k%d" % n))
    conn.close()

    store = await SQLiteStore.open(str(path))
    try:
        assert store.schema_version == SQLITE[-1][0] > VERSION_BEFORE
        new = [row(9 + n, verdict_json='{"blocking": "dns", "layers": []}', **token_of(2)) for n in range(3)]
        assert await store.insert_many(new, [envelope_of(r) for r in new]) == [True] * 3
        stored, _ = await store.page(MeasurementFilter(), None, 100)
        assert stored == [*old_rows, *new]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    try:
        kinds = dict(conn.execute("SELECT measurement_uid, typeof(verdict_json) FROM measurements"))
        assert [kinds[r.measurement_uid] for r in old_rows] == ["text"] * 5
        assert [kinds[r.measurement_uid] for r in new] == ["blob"] * 3
        envelopes = conn.execute("SELECT measurement_uid, signature, public_key FROM envelopes").fetchall()
        expected = {(r.measurement_uid, b"s%d" % n, b"k%d" % n) for n, r in enumerate(old_rows)}
        assert set(envelopes) == expected | {(r.measurement_uid, *envelope_of(r)) for r in new}
        # the new batch's token is kept once, its rows refer to it; the old rows keep theirs inline
        assert conn.execute("SELECT count(*) FROM batch_tokens").fetchone() == (1,)
        inline = dict(conn.execute("SELECT measurement_uid, token IS NOT NULL FROM measurements"))
        assert [inline[r.measurement_uid] for r in [*old_rows, *new]] == [0, 1, 0, 1, 0, 0, 0, 0]
        (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'envelopes'").fetchone()
        assert "WITHOUT ROWID" in sql
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_upgrade_from_version_4_keeps_spent_and_batch_tokens(tmp_path: Path) -> None:
    """Migration 5 rebuilds ``spent_tokens`` and re-indexes ``batch_tokens``: a token spent before still
    refuses another batch and still lets its own batch be resent; a batch's token is still found again."""
    path = tmp_path / "v4.db"
    spent = TokenSpend(b"t" * 32, b"d" * 32, 2901, "ik-1")
    token = {**token_of(1), "token": b"p" * 32 + bytes(range(256))}  # the prefix, then the RSA signature
    old = row(1, **token)
    conn = _database_at(path, 4)
    conn.execute(
        "INSERT INTO spent_tokens VALUES (?, ?, ?, ?)", (spent.spent_id, spent.batch_digest, 2901, "ik-1")
    )
    cursor = conn.execute(
        "INSERT INTO batch_tokens (batch_token, batch_ephemeral_key, batch_epoch, batch_key_id)"
        " VALUES (?, ?, ?, ?)",
        (old.token, old.ephemeral_key, old.token_epoch, old.token_key_id),
    )
    conn.execute(
        f"INSERT INTO measurements VALUES ({', '.join('?' * 22)})",
        _row_values(old, int(cursor.lastrowid or 0)),
    )
    conn.close()

    store = await SQLiteStore.open(str(path))
    try:
        with pytest.raises(DoubleSpend):
            await store.insert_batch(
                [row(2)], [envelope_of(row(2))], TokenSpend(b"t" * 32, b"e" * 32, 2901, "ik-1")
            )
        resent = await store.insert_batch([old], [envelope_of(old)], spent)
        assert resent.replayed and resent.inserted == [False]
        same_token = row(3, **token)
        assert await store.insert_many([same_token], [envelope_of(same_token)]) == [True]
        stored, _ = await store.page(MeasurementFilter(), None, 100)
        assert stored == [old, same_token]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM batch_tokens").fetchone() == (1,)  # found, not made again
        assert conn.execute("SELECT count(*) FROM spent_tokens").fetchone() == (1,)
        (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'spent_tokens'").fetchone()
        assert "WITHOUT ROWID" in sql
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()

"""The SQLite store's token tables (issue 12): spent tokens, issuer keys, issuance quotas and nonces.

Each function runs on the store's worker thread with its connection; :func:`spend` inside the caller's
transaction (so that the token and the batch's rows commit together), the others in their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from gatewatch.core.vocabulary import ENROLMENT_REQUIRED, QUOTA_EXCEEDED, REPLAYED_REQUEST

from .base import DoubleSpend, IssuanceRefused, IssuerKeyRecord, StoredMeasurement, TokenSpend

__all__ = ["add_issuer_key", "charge_tokens", "issuer_keys", "retire_issuer_keys", "spend"]

NONCE_MEMORY_MICROS = 24 * 3600 * 1_000_000


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def spend(conn: sqlite3.Connection, token: TokenSpend) -> bool:
    """Mark the token spent (in the caller's transaction); True when it was spent on this batch already.
    Raises :class:`DoubleSpend` when it was spent on another."""
    cursor = conn.execute(
        "INSERT INTO spent_tokens (spent_id, batch_digest, epoch, key_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (spent_id) DO NOTHING",
        (token.spent_id, token.batch_digest, token.epoch, token.key_id),
    )
    if cursor.rowcount == 1:
        return False
    (digest,) = conn.execute(
        "SELECT batch_digest FROM spent_tokens WHERE spent_id = ?", (token.spent_id,)
    ).fetchone()
    if bytes(digest) != token.batch_digest:
        raise DoubleSpend("the token was spent on another batch")
    return True


def issuer_keys(conn: sqlite3.Connection) -> list[IssuerKeyRecord]:
    rows = conn.execute("SELECT epoch, key_id, public_key, private_key FROM issuer_keys ORDER BY epoch")
    return [
        IssuerKeyRecord(epoch, key_id, bytes(public), bytes(private) if private is not None else None)
        for epoch, key_id, public, private in rows
    ]


def add_issuer_key(conn: sqlite3.Connection, record: IssuerKeyRecord) -> IssuerKeyRecord:
    with _transaction(conn):
        conn.execute(
            "INSERT INTO issuer_keys (epoch, key_id, public_key, private_key) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (epoch) DO NOTHING",
            (record.epoch, record.key_id, record.public_key, record.private_key),
        )
        epoch, key_id, public, private = conn.execute(
            "SELECT epoch, key_id, public_key, private_key FROM issuer_keys WHERE epoch = ?", (record.epoch,)
        ).fetchone()
    return IssuerKeyRecord(epoch, key_id, bytes(public), bytes(private) if private is not None else None)


def retire_issuer_keys(conn: sqlite3.Connection, before_epoch: int) -> int:
    with _transaction(conn):
        return conn.execute(
            "UPDATE issuer_keys SET private_key = NULL WHERE epoch < ? AND private_key IS NOT NULL",
            (before_epoch,),
        ).rowcount


def charge_tokens(
    conn: sqlite3.Connection,
    key_hash: bytes,
    epoch: int,
    count: int,
    quota: int,
    nonce: bytes,
    enrol: bool,
    now_micros: int,
) -> int:
    with _transaction(conn):
        conn.execute("DELETE FROM token_nonces WHERE seen_at < ?", (now_micros - NONCE_MEMORY_MICROS,))
        if (
            conn.execute(
                "INSERT INTO token_nonces (nonce, seen_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING",
                (nonce, now_micros),
            ).rowcount
            != 1
        ):
            raise IssuanceRefused(REPLAYED_REQUEST)
        if enrol:
            conn.execute(
                "INSERT INTO token_enrolled (key_hash) VALUES (?) ON CONFLICT DO NOTHING", (key_hash,)
            )
        elif not conn.execute("SELECT 1 FROM token_enrolled WHERE key_hash = ?", (key_hash,)).fetchone():
            raise IssuanceRefused(ENROLMENT_REQUIRED)
        row = conn.execute(
            "SELECT issued FROM token_issuance WHERE key_hash = ? AND epoch = ?", (key_hash, epoch)
        ).fetchone()
        issued = row[0] if row else 0
        if issued + count > quota:
            raise IssuanceRefused(QUOTA_EXCEEDED, max(0, quota - issued))
        conn.execute(
            "INSERT INTO token_issuance (key_hash, epoch, issued) VALUES (?, ?, ?)"
            " ON CONFLICT (key_hash, epoch) DO UPDATE SET issued = issued + excluded.issued",
            (key_hash, epoch, count),
        )
    return quota - issued - count


def batch_token_ref(
    conn: sqlite3.Connection, row: StoredMeasurement, known: dict[tuple[object, ...], int]
) -> int | None:
    """The ``batch_tokens`` row of a token-signed row's token (made on first use); None for a row signed
    otherwise. A batch's measurements share one token: it is kept once, not once per measurement.
    ``known``: the references found so far in this transaction."""
    if row.token is None or row.ephemeral_key is None or row.token_epoch is None or row.token_key_id is None:
        return None
    parts = (row.token, row.ephemeral_key, row.token_epoch, row.token_key_id)
    if parts in known:
        return known[parts]
    known[parts] = _token_ref(conn, parts)
    return known[parts]


def _token_ref(conn: sqlite3.Connection, parts: tuple[object, ...]) -> int:
    found = conn.execute(
        "SELECT token_ref FROM batch_tokens WHERE substr(batch_token, 33, 16) = substr(?1, 33, 16)"
        " AND batch_token = ?1 AND batch_ephemeral_key = ?2 AND batch_epoch = ?3 AND batch_key_id = ?4",
        parts,
    ).fetchone()
    if found is not None:
        return int(found[0])
    cursor = conn.execute(
        "INSERT INTO batch_tokens (batch_token, batch_ephemeral_key, batch_epoch, batch_key_id)"
        " VALUES (?, ?, ?, ?)",
        parts,
    )
    return int(cursor.lastrowid or 0)

"""The PostgreSQL store's token tables (issue 12): spent tokens, issuer keys, issuance quotas and nonces.

A batch's token is spent by migration 5's batch function (postgres.py), in the statement that stores the
batch: the spent-token table's primary key settles a race, as of two collectors inserting the same token
the second waits for the first's statement and then finds the row, so exactly one batch is accepted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gatewatch.core.vocabulary import ENROLMENT_REQUIRED, QUOTA_EXCEEDED, REPLAYED_REQUEST

from .base import IssuanceRefused, IssuerKeyRecord

__all__ = ["add_issuer_key", "charge_tokens", "issuer_keys", "retire_issuer_keys"]

NONCE_MEMORY = timedelta(days=1)


def _record(row: Any) -> IssuerKeyRecord:
    private = row["private_key"]
    return IssuerKeyRecord(
        row["epoch"], row["key_id"], bytes(row["public_key"]), bytes(private) if private is not None else None
    )


async def issuer_keys(conn: Any) -> list[IssuerKeyRecord]:
    rows = await conn.fetch("SELECT epoch, key_id, public_key, private_key FROM issuer_keys ORDER BY epoch")
    return [_record(row) for row in rows]


async def add_issuer_key(conn: Any, record: IssuerKeyRecord) -> IssuerKeyRecord:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO issuer_keys (epoch, key_id, public_key, private_key) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (epoch) DO NOTHING",
            record.epoch,
            record.key_id,
            record.public_key,
            record.private_key,
        )
        row = await conn.fetchrow(
            "SELECT epoch, key_id, public_key, private_key FROM issuer_keys WHERE epoch = $1", record.epoch
        )
    return _record(row)


async def retire_issuer_keys(conn: Any, before_epoch: int) -> int:
    status = await conn.execute(
        "UPDATE issuer_keys SET private_key = NULL WHERE epoch < $1 AND private_key IS NOT NULL", before_epoch
    )
    return int(status.split()[-1])


async def charge_tokens(
    conn: Any, key_hash: bytes, epoch: int, count: int, quota: int, nonce: bytes, enrol: bool, now: datetime
) -> int:
    seen_at = int(now.timestamp() * 1_000_000)
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM token_nonces WHERE seen_at < $1",
            seen_at - int(NONCE_MEMORY.total_seconds() * 1_000_000),
        )
        fresh = await conn.fetchval(
            "INSERT INTO token_nonces (nonce, seen_at) VALUES ($1, $2)"
            " ON CONFLICT (nonce) DO NOTHING RETURNING 1",
            nonce,
            seen_at,
        )
        if not fresh:
            raise IssuanceRefused(REPLAYED_REQUEST)
        if enrol:
            await conn.execute(
                "INSERT INTO token_enrolled (key_hash) VALUES ($1) ON CONFLICT DO NOTHING", key_hash
            )
        elif not await conn.fetchval("SELECT 1 FROM token_enrolled WHERE key_hash = $1", key_hash):
            raise IssuanceRefused(ENROLMENT_REQUIRED)
        # The row lock taken by the upsert serialises two requests of one key on several collectors.
        issued = await conn.fetchval(
            "INSERT INTO token_issuance (key_hash, epoch, issued) VALUES ($1, $2, $3)"
            " ON CONFLICT (key_hash, epoch) DO UPDATE SET issued = token_issuance.issued + excluded.issued"
            " RETURNING issued",
            key_hash,
            epoch,
            count,
        )
        if issued > quota:
            raise IssuanceRefused(QUOTA_EXCEEDED, max(0, quota - (issued - count)))
    return int(quota - issued)

"""Versioned schema migrations, one list per dialect, kept as Python strings so they ship with the package.

A migration is never edited once released: add a new version instead. Each version is applied in its own
transaction together with its row in ``schema_migrations``, so a crash leaves either all of it or none.
No table has a column for an address: nothing stored identifies a volunteer.
"""

from __future__ import annotations

__all__ = ["POSTGRES", "SQLITE", "Migration"]

Migration = tuple[int, tuple[str, ...]]  # (version, statements)

SQLITE: tuple[Migration, ...] = (
    (
        1,
        (
            # Times are integer microseconds since the epoch (UTC): they sort and compare exactly.
            """CREATE TABLE measurements (
                measurement_uid TEXT PRIMARY KEY,
                received_at INTEGER NOT NULL,
                measurement_start_time INTEGER NOT NULL,
                probe_cc TEXT NOT NULL,
                probe_asn TEXT NOT NULL,
                test_name TEXT NOT NULL,
                input TEXT NOT NULL,
                domain TEXT NOT NULL,
                blocking TEXT NOT NULL,
                anomaly INTEGER NOT NULL,
                technique TEXT,
                fingerprint_key TEXT,
                verdict_json TEXT NOT NULL,
                payload BLOB NOT NULL,
                flags TEXT NOT NULL DEFAULT '[]'
            )""",
            # Kept apart so that exports, which read only `measurements`, cannot leak a per-agent key.
            """CREATE TABLE envelopes (
                measurement_uid TEXT PRIMARY KEY REFERENCES measurements (measurement_uid),
                signature BLOB NOT NULL,
                public_key BLOB NOT NULL
            )""",
            "CREATE INDEX measurements_by_time ON measurements (measurement_start_time, measurement_uid)",
            "CREATE INDEX measurements_by_cc ON measurements"
            " (probe_cc, measurement_start_time, measurement_uid)",
            "CREATE INDEX measurements_by_domain ON measurements (domain, measurement_start_time)",
        ),
    ),
    (
        2,
        (
            # Issue 12: the per-batch ephemeral key, its signature and the batch's token, per measurement
            # (exported); rows stored before keep the long-term scheme and leave these empty.
            "ALTER TABLE measurements ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'ed25519-longterm/1'",
            "ALTER TABLE measurements ADD COLUMN signature BLOB",
            "ALTER TABLE measurements ADD COLUMN ephemeral_key BLOB",
            "ALTER TABLE measurements ADD COLUMN token BLOB",
            "ALTER TABLE measurements ADD COLUMN token_epoch INTEGER",
            "ALTER TABLE measurements ADD COLUMN token_key_id TEXT",
            # One row per spent token, shared by every collector on this store (the double-spend guard).
            """CREATE TABLE spent_tokens (
                spent_id BLOB PRIMARY KEY,
                batch_digest BLOB NOT NULL,
                epoch INTEGER NOT NULL,
                key_id TEXT NOT NULL
            )""",
            # The issuer's keys per epoch; the private key is dropped once the epoch's issuance is over.
            """CREATE TABLE issuer_keys (
                epoch INTEGER PRIMARY KEY,
                key_id TEXT NOT NULL UNIQUE,
                public_key BLOB NOT NULL,
                private_key BLOB
            )""",
            # Issuance bookkeeping, keyed by a hash of the long-term key: never joined to a measurement.
            """CREATE TABLE token_issuance (
                key_hash BLOB NOT NULL,
                epoch INTEGER NOT NULL,
                issued INTEGER NOT NULL,
                PRIMARY KEY (key_hash, epoch)
            )""",
            "CREATE TABLE token_enrolled (key_hash BLOB PRIMARY KEY)",
            "CREATE TABLE token_nonces (nonce BLOB PRIMARY KEY, seen_at INTEGER NOT NULL)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    (
        1,
        (
            """CREATE TABLE measurements (
                measurement_uid TEXT PRIMARY KEY,
                received_at TIMESTAMPTZ NOT NULL,
                measurement_start_time TIMESTAMPTZ NOT NULL,
                probe_cc TEXT NOT NULL,
                probe_asn TEXT NOT NULL,
                test_name TEXT NOT NULL,
                input TEXT NOT NULL,
                domain TEXT NOT NULL,
                blocking TEXT NOT NULL,
                anomaly BOOLEAN NOT NULL,
                technique TEXT,
                fingerprint_key TEXT,
                verdict_json TEXT NOT NULL,
                payload BYTEA NOT NULL,
                flags TEXT[] NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE envelopes (
                measurement_uid TEXT PRIMARY KEY REFERENCES measurements (measurement_uid),
                signature BYTEA NOT NULL,
                public_key BYTEA NOT NULL
            )""",
            "CREATE INDEX measurements_by_time ON measurements (measurement_start_time, measurement_uid)",
            "CREATE INDEX measurements_by_cc ON measurements"
            " (probe_cc, measurement_start_time, measurement_uid)",
            "CREATE INDEX measurements_by_domain ON measurements (domain, measurement_start_time)",
        ),
    ),
    (
        2,
        (
            # Issue 12: the per-batch ephemeral key, its signature and the batch's token, per measurement
            # (exported); rows stored before keep the long-term scheme and leave these empty.
            "ALTER TABLE measurements ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'ed25519-longterm/1'",
            "ALTER TABLE measurements ADD COLUMN signature BYTEA",
            "ALTER TABLE measurements ADD COLUMN ephemeral_key BYTEA",
            "ALTER TABLE measurements ADD COLUMN token BYTEA",
            "ALTER TABLE measurements ADD COLUMN token_epoch BIGINT",
            "ALTER TABLE measurements ADD COLUMN token_key_id TEXT",
            # One row per spent token, shared by every collector on this store (the double-spend guard).
            """CREATE TABLE spent_tokens (
                spent_id BYTEA PRIMARY KEY,
                batch_digest BYTEA NOT NULL,
                epoch BIGINT NOT NULL,
                key_id TEXT NOT NULL
            )""",
            # The issuer's keys per epoch; the private key is dropped once the epoch's issuance is over.
            """CREATE TABLE issuer_keys (
                epoch BIGINT PRIMARY KEY,
                key_id TEXT NOT NULL UNIQUE,
                public_key BYTEA NOT NULL,
                private_key BYTEA
            )""",
            # Issuance bookkeeping, keyed by a hash of the long-term key: never joined to a measurement.
            """CREATE TABLE token_issuance (
                key_hash BYTEA NOT NULL,
                epoch BIGINT NOT NULL,
                issued BIGINT NOT NULL,
                PRIMARY KEY (key_hash, epoch)
            )""",
            "CREATE TABLE token_enrolled (key_hash BYTEA PRIMARY KEY)",
            "CREATE TABLE token_nonces (nonce BYTEA PRIMARY KEY, seen_at BIGINT NOT NULL)",
        ),
    ),
)

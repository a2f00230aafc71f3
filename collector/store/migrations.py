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
)

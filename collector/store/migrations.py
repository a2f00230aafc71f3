"""Versioned schema migrations, one list per dialect, kept as Python strings so they ship with the package.

A migration is never edited once released: add a new version instead. Each version is applied in its own
transaction together with its row in ``schema_migrations``, so a crash leaves either all of it or none.
No table has a column for an address: nothing stored identifies a volunteer.
"""

from __future__ import annotations

__all__ = ["BATCH_FUNCTION", "DOUBLE_SPEND_STATE", "PARTITION_FUNCTION", "POSTGRES", "SQLITE", "Migration"]

Migration = tuple[int, tuple[str, ...]]  # (version, statements)

# PostgreSQL from version 2: `SELECT gatewatch_measurement_partition(day)` creates the monthly partition of
# `measurements` holding that day (UTC) unless it exists, moving any of its rows out of the default partition
# first. Collectors call it for each month they are about to write to (postgres.py); an advisory lock makes
# concurrent calls from several collectors safe.
PARTITION_FUNCTION = "gatewatch_measurement_partition"

# PostgreSQL from version 5: `SELECT * FROM gatewatch_store_batch(...)` stores a whole batch in one round trip
# and one statement (so atomically, without BEGIN/COMMIT round trips): the batch's token spent (or found
# spent on this very batch: `replayed`; on another: SQLSTATE DOUBLE_SPEND_STATE), its envelopes claimed
# (`ON CONFLICT DO NOTHING`: the primary key settles duplicates, also between collectors) and the rows of
# the claimed ones inserted; `stored` names the uids that were new. Arrays rather than one jsonb: asyncpg
# sends them in binary, so payloads travel as they are (no base64, no JSON parsing on the server).
BATCH_FUNCTION = "gatewatch_store_batch"
DOUBLE_SPEND_STATE = "GW001"

_STORE_BATCH = f"""CREATE FUNCTION {BATCH_FUNCTION}(
    in_spent_id BYTEA, in_batch_digest BYTEA, in_epoch BIGINT, in_key_id TEXT,
    in_uids TEXT[], in_signatures BYTEA[], in_public_keys BYTEA[],
    in_received_at TIMESTAMPTZ[], in_start_times TIMESTAMPTZ[], in_ccs TEXT[], in_asns TEXT[],
    in_test_names TEXT[], in_inputs TEXT[], in_domains TEXT[], in_blocking TEXT[], in_anomalies BOOLEAN[],
    in_techniques TEXT[], in_fp_keys TEXT[], in_verdicts TEXT[], in_payloads BYTEA[], in_flags TEXT[],
    in_schemes TEXT[], in_row_signatures BYTEA[], in_ephemeral_keys BYTEA[], in_tokens BYTEA[],
    in_token_epochs BIGINT[], in_token_key_ids TEXT[],
    OUT replayed BOOLEAN, OUT stored TEXT[]
) LANGUAGE plpgsql AS $$
DECLARE
    known BYTEA;
BEGIN
    replayed := FALSE;
    IF in_spent_id IS NOT NULL THEN
        -- Of two collectors racing the same token, the second waits here for the first to commit.
        INSERT INTO spent_tokens (spent_id, batch_digest, epoch, key_id)
            VALUES (in_spent_id, in_batch_digest, in_epoch, in_key_id)
            ON CONFLICT (spent_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT batch_digest INTO known FROM spent_tokens WHERE spent_id = in_spent_id;
            IF known IS DISTINCT FROM in_batch_digest THEN
                RAISE EXCEPTION 'the token was spent on another batch' USING ERRCODE = '{DOUBLE_SPEND_STATE}';
            END IF;
            replayed := TRUE;
        END IF;
    END IF;
    -- unnest() of a 2-D array would flatten it, so each row's flags travel as one JSON text.
    WITH claimed AS (
        INSERT INTO envelopes (measurement_uid, signature, public_key)
        SELECT * FROM unnest(in_uids, in_signatures, in_public_keys)
        ON CONFLICT (measurement_uid) DO NOTHING
        RETURNING measurement_uid
    ), kept AS (
        INSERT INTO measurements (
            measurement_uid, received_at, measurement_start_time, probe_cc, probe_asn, test_name, input,
            domain, blocking, anomaly, technique, fingerprint_key, verdict_json, payload, flags,
            signature_scheme, signature, ephemeral_key, token, token_epoch, token_key_id)
        SELECT m.uid, m.received_at, m.start_time, m.cc, m.asn, m.test_name, m.input, m.domain, m.blocking,
               m.anomaly, m.technique, m.fp_key, m.verdict, m.payload,
               ARRAY(SELECT json_array_elements_text(m.flags::json)), m.scheme, m.signature,
               m.ephemeral_key, m.token, m.token_epoch, m.token_key_id
        FROM unnest(
            in_uids, in_received_at, in_start_times, in_ccs, in_asns, in_test_names, in_inputs, in_domains,
            in_blocking, in_anomalies, in_techniques, in_fp_keys, in_verdicts, in_payloads, in_flags,
            in_schemes, in_row_signatures, in_ephemeral_keys, in_tokens, in_token_epochs, in_token_key_ids
        ) AS m(uid, received_at, start_time, cc, asn, test_name, input, domain, blocking, anomaly,
               technique, fp_key, verdict, payload, flags, scheme, signature, ephemeral_key, token,
               token_epoch, token_key_id)
        JOIN claimed ON claimed.measurement_uid = m.uid
        RETURNING measurement_uid
    )
    SELECT coalesce(array_agg(measurement_uid), '{{}}') INTO stored FROM kept;
END
$$"""

# lz4 compresses and decompresses the large values (the signed payload, the verdict) several times faster
# than PostgreSQL's default pglz; a server built without lz4 (or older than 14) keeps pglz. Values already
# stored keep their compression until rewritten.
_LZ4_PAYLOADS = """DO $$
DECLARE
    part REGCLASS;
BEGIN
    -- The parent (whose setting new partitions take) and each existing partition: it does not recurse.
    FOR part IN SELECT 'measurements'::regclass UNION ALL
                SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'measurements'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN payload SET COMPRESSION lz4,'
                       ' ALTER COLUMN verdict_json SET COMPRESSION lz4', part);
    END LOOP;
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 compression not available: payloads keep the default';
END
$$"""

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
    (
        3,
        (
            # A domain's rows in page order (start time, uid): a page filtered by domain continues from
            # its cursor instead of sorting every row of the domain again (the uid was missing).
            "CREATE INDEX measurements_by_domain_page ON measurements"
            " (domain, measurement_start_time, measurement_uid)",
            "DROP INDEX measurements_by_domain",
        ),
    ),
    (
        4,
        (
            # Issue 16, stored bytes. Verdicts are stored deflated (store/verdict_codec.py) from now on, in
            # the same column (SQLite keeps a BLOB in a TEXT column as it is; rows stored before keep their
            # JSON text, read as it is). `envelopes` rows are small and keyed by the uid: WITHOUT ROWID
            # keeps each once, in the primary key's B-tree, instead of a table and an index of the uid.
            """CREATE TABLE envelopes_v4 (
                measurement_uid TEXT PRIMARY KEY REFERENCES measurements (measurement_uid),
                signature BLOB NOT NULL,
                public_key BLOB NOT NULL
            ) WITHOUT ROWID""",
            "INSERT INTO envelopes_v4 (measurement_uid, signature, public_key)"
            " SELECT measurement_uid, signature, public_key FROM envelopes",
            "DROP TABLE envelopes",
            "ALTER TABLE envelopes_v4 RENAME TO envelopes",
            # A batch's token, ephemeral key, epoch and key id, once per batch (~330 bytes that each of its
            # measurements held); rows stored before keep them inline (read with coalesce, sqlite.py).
            """CREATE TABLE batch_tokens (
                token_ref INTEGER PRIMARY KEY,
                batch_token BLOB NOT NULL,
                batch_ephemeral_key BLOB NOT NULL,
                batch_epoch INTEGER NOT NULL,
                batch_key_id TEXT NOT NULL
            )""",
            # Looked up by its token when the batch's rows are written (a resend finds it again).
            "CREATE UNIQUE INDEX batch_tokens_by_token ON batch_tokens"
            " (batch_token, batch_ephemeral_key, batch_epoch, batch_key_id)",
            "ALTER TABLE measurements ADD COLUMN token_ref INTEGER REFERENCES batch_tokens (token_ref)",
        ),
    ),
    (
        5,
        (
            # Issue 16, stored bytes of token batches. The unique index of migration 4 held a second copy of
            # each batch's whole token (~400 bytes a batch, as much as the row): it is found now by 16 bytes
            # of its RSA signature (sqlite_tokens._token_ref compares the whole token on the rows found).
            # The signature's bytes, unlike the agent-chosen prefix before them, no agent can pick, so no
            # agent can crowd one index key. Without UNIQUE, one writer at a time (BEGIN IMMEDIATE) and the
            # look-up before the insert keep one row per token.
            "DROP INDEX batch_tokens_by_token",
            "CREATE INDEX batch_tokens_by_signature ON batch_tokens (substr(batch_token, 33, 16))",
            # Spent tokens are found only by their id: WITHOUT ROWID keeps each id once, in the primary
            # key's B-tree, instead of a table and an index holding it.
            """CREATE TABLE spent_tokens_v5 (
                spent_id BLOB PRIMARY KEY,
                batch_digest BLOB NOT NULL,
                epoch INTEGER NOT NULL,
                key_id TEXT NOT NULL
            ) WITHOUT ROWID""",
            "INSERT INTO spent_tokens_v5 (spent_id, batch_digest, epoch, key_id)"
            " SELECT spent_id, batch_digest, epoch, key_id FROM spent_tokens",
            "DROP TABLE spent_tokens",
            "ALTER TABLE spent_tokens_v5 RENAME TO spent_tokens",
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
            # Monthly range partitions on measurement_start_time, so that a national deployment's years of
            # data stay fast to insert, query, export and expire (retention drops a month's partition).
            # A partitioned table's primary key must hold the partition key, so the uid alone is no longer
            # unique in `measurements`: `envelopes` (one row per measurement, not partitioned) keeps the
            # uid's primary key and is written first, which is what settles duplicates (postgres.py).
            "ALTER TABLE envelopes DROP CONSTRAINT IF EXISTS envelopes_measurement_uid_fkey",
            "ALTER TABLE measurements RENAME TO measurements_v1",
            "ALTER TABLE measurements_v1 RENAME CONSTRAINT measurements_pkey TO measurements_v1_pkey",
            """CREATE TABLE measurements (
                measurement_uid TEXT NOT NULL,
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
                flags TEXT[] NOT NULL DEFAULT '{}',
                CONSTRAINT measurements_pkey PRIMARY KEY (measurement_start_time, measurement_uid)
            ) PARTITION BY RANGE (measurement_start_time)""",
            # Rows of a month without its partition yet land here, so an insert never fails for want of one.
            "CREATE TABLE measurements_default PARTITION OF measurements DEFAULT",
            f"""CREATE FUNCTION {PARTITION_FUNCTION}(day DATE) RETURNS VOID LANGUAGE plpgsql AS $$
            DECLARE
                first DATE := date_trunc('month', day)::date;
                name TEXT := 'measurements_' || to_char(first, 'YYYY_MM');
                low TIMESTAMPTZ := first::timestamp AT TIME ZONE 'UTC';
                high TIMESTAMPTZ := (first + INTERVAL '1 month')::timestamp AT TIME ZONE 'UTC';
            BEGIN
                IF to_regclass(name) IS NOT NULL THEN
                    RETURN;
                END IF;
                PERFORM pg_advisory_xact_lock(7453010427236525668);  -- serialises partition creation
                -- Asked again of pg_class with a fresh snapshot (to_regclass may answer from a cache that
                -- the advisory lock does not refresh): another collector may have just created it.
                PERFORM 1 FROM pg_class
                    WHERE relname = name AND relnamespace = current_schema()::regnamespace;
                IF FOUND THEN
                    RETURN;
                END IF;
                -- A new range may not overlap rows the default partition holds: move them across.
                CREATE TEMPORARY TABLE gatewatch_moving AS
                    SELECT * FROM measurements_default
                    WHERE measurement_start_time >= low AND measurement_start_time < high;
                DELETE FROM measurements_default
                    WHERE measurement_start_time >= low AND measurement_start_time < high;
                EXECUTE format('CREATE TABLE %I PARTITION OF measurements FOR VALUES FROM (%L) TO (%L)',
                               name, low, high);
                INSERT INTO measurements SELECT * FROM gatewatch_moving;
                DROP TABLE gatewatch_moving;
            END
            $$""",
            f"""SELECT {PARTITION_FUNCTION}(month) FROM (
                SELECT DISTINCT date_trunc('month', measurement_start_time AT TIME ZONE 'UTC')::date AS month
                FROM measurements_v1
            ) AS months""",
            "INSERT INTO measurements SELECT * FROM measurements_v1",
            "DROP TABLE measurements_v1",
            # The primary key (start time, uid) serves time order; these are created on every partition.
            "CREATE INDEX measurements_by_cc ON measurements"
            " (probe_cc, measurement_start_time, measurement_uid)",
            "CREATE INDEX measurements_by_domain ON measurements (domain, measurement_start_time)",
            # What other collectors stored lately (collector/peer_sync.py reads it every few seconds).
            "CREATE INDEX measurements_by_received ON measurements (received_at, measurement_uid)",
        ),
    ),
    (
        3,
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
    (
        4,
        (
            # As SQLite's version 2: a domain's rows in page order, so a page continues from its cursor.
            "CREATE INDEX measurements_by_domain_page ON measurements"
            " (domain, measurement_start_time, measurement_uid)",
            "DROP INDEX measurements_by_domain",
        ),
    ),
    (
        5,
        (
            # Issue 16: a batch in one round trip (postgres.py), and lz4 for the large values.
            _STORE_BATCH,
            _LZ4_PAYLOADS,
        ),
    ),
)

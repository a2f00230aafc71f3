"""Upgrading a SQLite store that holds data from the schema before (version 3) to the current one: every
row and envelope survives as it was, old verdicts (JSON text) are read beside new ones (deflated)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gatewatch.collector.store import MeasurementFilter
from gatewatch.collector.store.migrations import SQLITE
from gatewatch.collector.store.sqlite import SQLiteStore, _row_values

from .test_stores import envelope_of, row

VERSION_BEFORE = 3


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
    old_rows = [row(n, verdict_json=f'{{"blocking": false, "n": {n}}}') for n in range(5)]
    conn = _database_at(path, VERSION_BEFORE)
    for n, r in enumerate(old_rows):
        values = list(_row_values(r))
        values[12] = r.verdict_json  # as version 3 stored it: the JSON text
        conn.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * len(values))})", values)
        conn.execute("INSERT INTO envelopes VALUES (?, ?, ?)", (r.measurement_uid, b"s%d" % n, b"k%d" % n))
    conn.close()

    store = await SQLiteStore.open(str(path))
    try:
        assert store.schema_version == SQLITE[-1][0] > VERSION_BEFORE
        new = row(9, verdict_json='{"blocking": "dns", "layers": []}')
        assert await store.insert_many([new], [envelope_of(new)]) == [True]
        stored, _ = await store.page(MeasurementFilter(), None, 100)
        assert stored == [*old_rows, new]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    try:
        kinds = dict(conn.execute("SELECT measurement_uid, typeof(verdict_json) FROM measurements"))
        assert [kinds[r.measurement_uid] for r in old_rows] == ["text"] * 5 and kinds[
            new.measurement_uid
        ] == "blob"
        envelopes = conn.execute("SELECT measurement_uid, signature, public_key FROM envelopes").fetchall()
        expected = {(r.measurement_uid, b"s%d" % n, b"k%d" % n) for n, r in enumerate(old_rows)}
        assert set(envelopes) == expected | {(new.measurement_uid, *envelope_of(new))}
        (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'envelopes'").fetchone()
        assert "WITHOUT ROWID" in sql
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()

"""The local queue of signed measurements (SQLite, WAL, ``synchronous=FULL``).

A measurement is written here, signed, *before* any upload is attempted, and leaves the ``pending``
state only once a collector has answered for it. So a crash or ``kill -9`` at any moment loses nothing
(the commit is durable before the next step) and duplicates nothing (a re-sent measurement keeps its
``measurement_uid``, which the collector deduplicates on).

States: ``pending`` (to upload) → ``sent`` (the collector accepted it or already had it) or
``quarantined`` (the collector rejected it, with a reason; not retried). ``local`` rows come from an
exploratory ``--no-upload`` run: kept for ``results``, never uploaded (the volunteer chose so). The file
is bounded: sent and local rows are pruned oldest first (then quarantined ones) past ``max_sent`` rows or
``max_bytes``; pending rows are
never dropped, and past ``max_unsent`` the queue refuses new ones (:class:`QueueFull`) so that the agent
stops measuring instead of throwing work away.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gatewatch.core.envelope import Envelope
from gatewatch.core.measurement import format_utc, utc_now

from .settings import QueueSettings

__all__ = ["MeasurementQueue", "QueueFull", "QueuedMeasurement", "QueuedWrite", "State"]

log = logging.getLogger(__name__)

State = Literal["pending", "sent", "quarantined", "local"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    measurement_uid TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'quarantined', 'local')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,      -- the exact signed bytes
    signature TEXT NOT NULL,    -- base64, as in the envelope ('' until its batch signs it)
    public_key TEXT NOT NULL    -- base64, as in the envelope ('' until its batch signs it)
);
CREATE INDEX IF NOT EXISTS measurements_by_state ON measurements (state, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class QueueFull(RuntimeError):
    """Too many measurements wait for upload: stop measuring until some are delivered."""


@dataclass(frozen=True)
class QueuedMeasurement:
    row_id: int  # queue order
    measurement_uid: str
    created_at: str
    updated_at: str
    state: State
    reason: str | None
    attempts: int
    last_error: str | None
    payload: bytes
    signature: str
    public_key: str

    @property
    def envelope(self) -> Envelope:
        """The envelope exactly as signed (the payload's base64 is deterministic)."""
        return Envelope(
            payload=base64.b64encode(self.payload).decode(),
            signature=self.signature,
            public_key=self.public_key,
        )

    def measurement(self) -> dict[str, Any]:
        return json.loads(self.payload)


# One measurement to store: (measurement_uid, payload, envelope or None, local_only), as enqueue() takes it.
QueuedWrite = tuple[str, bytes, Envelope | None, bool]

_COLUMNS = (
    "id, measurement_uid, created_at, updated_at, state, reason, attempts, last_error,"
    " payload, signature, public_key"
)


_PAGE_CACHE_KIB = 256
_INSERT = (
    "INSERT OR IGNORE INTO measurements"
    " (measurement_uid, created_at, updated_at, state, size, payload, signature, public_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_row(
    uid: str, payload: bytes, envelope: Envelope | None, local_only: bool, now: str
) -> tuple[object, ...]:
    """The values of :data:`_INSERT` for one measurement."""
    signature, public_key = (envelope.signature, envelope.public_key) if envelope is not None else ("", "")
    state = "local" if local_only else "pending"
    return (uid, now, now, state, len(payload), payload, signature, public_key)


def _now() -> str:
    return format_utc(utc_now())


class MeasurementQueue:
    """One SQLite file. Not shared between threads: the agent uses it from its event loop only."""

    def __init__(self, path: Path, limits: QueueSettings | None = None) -> None:
        self.path = path
        self.limits = limits or QueueSettings()
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only effective on a new file; then frees pages
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        # The queue is written once per measurement and read in batches: SQLite's default 2 MiB page
        # cache buys it nothing but weighs on the agent's memory goal (issue 4).
        self._db.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MeasurementQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the wallet and the batches that live in the same file (agent/tokens.py,
        agent/batches.py)."""
        return self._db

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction()

    @contextmanager
    def one_sync(self) -> Iterator[None]:
        """Commits inside the block survive a crash or ``kill -9`` of the agent as soon as they are made
        (WAL with ``synchronous=NORMAL``: in the operating system's hands), and a power cut once the block
        ends, with one fsync of the WAL for them all instead of one per commit. A pass measures inside
        such a block: what a power cut can take is what it took before, measurements nobody has seen
        (nothing is uploaded before the block ends), and no fsync holds up the event loop per URL."""
        self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous = FULL")
            self.sync()

    def sync(self) -> None:
        """Make every commit so far durable: fsync the write-ahead log (the file holds every commit not
        yet checkpointed; SQLite syncs before each checkpoint)."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: already in the synced database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------

    def enqueue(
        self, measurement_uid: str, payload: bytes, envelope: Envelope | None, *, local_only: bool = False
    ) -> bool:
        """Store a measurement durably: signed by the long-term key (identified mode), or unsigned
        (``envelope`` None: its batch's ephemeral key signs it when the batch is sealed). Returns
        False when it was already queued (idempotent); raises :class:`QueueFull` when ``max_unsent``
        measurements already wait. ``local_only`` keeps it out of uploads for good."""
        if envelope is not None and base64.b64decode(envelope.payload) != payload:
            raise ValueError("the envelope does not carry these payload bytes")
        with self._transaction() as db:
            if db.execute(
                "SELECT 1 FROM measurements WHERE measurement_uid = ?", (measurement_uid,)
            ).fetchone():
                return False
            (waiting,) = db.execute("SELECT count(*) FROM measurements WHERE state = 'pending'").fetchone()
            if waiting >= self.limits.max_unsent and not local_only:
                log.warning("queue full: %d measurements wait for upload; not measuring more", waiting)
                raise QueueFull(
                    f"{waiting} measurements wait for upload (max_unsent={self.limits.max_unsent})"
                )
            cursor = db.execute(_INSERT, _insert_row(measurement_uid, payload, envelope, local_only, _now()))
            return cursor.rowcount == 1

    def pending_count(self) -> int:
        """How many measurements wait for upload now."""
        (waiting,) = self._db.execute("SELECT count(*) FROM measurements WHERE state = 'pending'").fetchone()
        return int(waiting)

    def enqueue_many(self, items: Iterable[QueuedWrite]) -> int:
        """:meth:`enqueue` for several measurements in one transaction (one commit for them all): each is
        stored unless already queued; how many were added. Past ``max_unsent`` the ones that fit are
        committed and :class:`QueueFull` is raised for the rest, as :meth:`enqueue` would for each."""
        items = list(items)
        for uid, payload, envelope, _ in items:
            if envelope is not None and base64.b64decode(envelope.payload) != payload:
                raise ValueError(f"the envelope of {uid} does not carry its payload bytes")
        added, full = 0, None
        with self._transaction() as db:
            (waiting,) = db.execute("SELECT count(*) FROM measurements WHERE state = 'pending'").fetchone()
            now = _now()
            for uid, payload, envelope, local_only in items:
                if not local_only and waiting >= self.limits.max_unsent:
                    full = QueueFull(
                        f"{waiting} measurements wait for upload (max_unsent={self.limits.max_unsent})"
                    )
                    break
                cursor = db.execute(_INSERT, _insert_row(uid, payload, envelope, local_only, now))
                added += cursor.rowcount
                waiting += cursor.rowcount and not local_only
        if full is not None:
            log.warning("queue full: %s; not measuring more", full)
            raise full
        return added

    def sign_unsigned(self, sign: Callable[[bytes], Envelope]) -> int:
        """Sign the pending rows queued unsigned (by the unlinkable mode) with ``sign``: for an agent
        switched to identified mode, whose uploads carry no token. How many were signed."""
        rows = self._db.execute(
            "SELECT measurement_uid, payload FROM measurements WHERE state = 'pending' AND signature = ''"
        ).fetchall()
        with self._transaction() as db:
            for uid, payload in rows:
                envelope = sign(bytes(payload))
                db.execute(
                    "UPDATE measurements SET signature = ?, public_key = ? WHERE measurement_uid = ?",
                    (envelope.signature, envelope.public_key, uid),
                )
        return len(rows)

    def mark_sent(self, uids: Iterable[str]) -> int:
        uids = list(uids)
        if not uids:
            return 0
        with self._transaction() as db:
            changed = db.executemany(
                "UPDATE measurements SET state = 'sent', reason = NULL, last_error = NULL, updated_at = ?,"
                " attempts = attempts + 1 WHERE measurement_uid = ? AND state = 'pending'",
                [(_now(), uid) for uid in uids],
            ).rowcount
        self.prune()
        return changed

    def quarantine(self, uid: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE measurements SET state = 'quarantined', reason = ?, updated_at = ?,"
                " attempts = attempts + 1 WHERE measurement_uid = ? AND state = 'pending'",
                (reason[:500], _now(), uid),
            )

    def keep_local(self, uids: Iterable[str], reason: str) -> int:
        """Take pending rows out of uploads for good (``local``, with the reason): measurements that
        must not leave the machine after all."""
        with self._transaction() as db:
            return db.executemany(
                "UPDATE measurements SET state = 'local', reason = ?, updated_at = ?"
                " WHERE measurement_uid = ? AND state = 'pending'",
                [(reason[:500], _now(), uid) for uid in uids],
            ).rowcount

    def record_failure(self, uids: Iterable[str], error: str) -> None:
        """An upload attempt for these failed in a way worth retrying (network, 5xx): keep them pending."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE measurements SET attempts = attempts + 1, last_error = ?, updated_at = ?"
                " WHERE measurement_uid = ? AND state = 'pending'",
                [(error[:500], _now(), uid) for uid in uids],
            )

    def prune(self) -> int:
        """Delete delivered and local rows (oldest first), then quarantined ones, past the bounds.
        Never pending ones."""
        removed = 0
        with self._transaction() as db:
            done = "state IN ('sent', 'local')"
            (sent,) = db.execute(f"SELECT count(*) FROM measurements WHERE {done}").fetchone()
            if sent > self.limits.max_sent:
                removed += db.execute(
                    f"DELETE FROM measurements WHERE id IN (SELECT id FROM measurements WHERE {done}"
                    " ORDER BY id LIMIT ?)",
                    (sent - self.limits.max_sent,),
                ).rowcount
            (total,) = db.execute("SELECT coalesce(sum(size), 0) FROM measurements").fetchone()
            excess = total - self.limits.max_bytes
            if excess > 0:
                doomed: list[int] = []
                rows = db.execute(
                    "SELECT id, size FROM measurements WHERE state != 'pending'"
                    " ORDER BY state = 'quarantined', id"
                )
                for row_id, size in rows:
                    if excess <= 0:
                        break
                    doomed.append(row_id)
                    excess -= size
                db.executemany("DELETE FROM measurements WHERE id = ?", [(i,) for i in doomed])
                removed += len(doomed)
                if excess > 0:
                    log.warning("queue over its size bound with pending measurements only; keeping them")
        if removed:
            self._db.execute("PRAGMA incremental_vacuum")
        return removed

    # -- reading -------------------------------------------------------------------------------------

    def _rows(
        self, where: str, params: tuple[object, ...], order: str, limit: int
    ) -> list[QueuedMeasurement]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM measurements WHERE {where} ORDER BY {order} LIMIT ?", (*params, limit)
        )
        return [QueuedMeasurement(*row) for row in rows]

    def pending(self, limit: int = 50, after: int = 0, *, unbatched: bool = False) -> list[QueuedMeasurement]:
        """Oldest first (the order in which they should reach the collector), from queue position
        ``after`` on, so that one upload pass visits each row once. ``unbatched``: only rows that no
        sealed batch holds (agent/batches.py)."""
        where = "state = 'pending' AND id > ?"
        if unbatched:
            where += " AND measurement_uid NOT IN (SELECT measurement_uid FROM batch_items)"
        return self._rows(where, (after,), "id", limit)

    def quarantined(self, limit: int = 50) -> list[QueuedMeasurement]:
        return self._rows("state = 'quarantined'", (), "id DESC", limit)

    def recent(self, limit: int = 50) -> list[QueuedMeasurement]:
        return self._rows("1", (), "id DESC", limit)

    def get(self, uid: str) -> QueuedMeasurement | None:
        rows = self._rows("measurement_uid = ?", (uid,), "id", 1)
        return rows[0] if rows else None

    def counts(self) -> dict[State, int]:
        found = dict(self._db.execute("SELECT state, count(*) FROM measurements GROUP BY state").fetchall())
        return {state: int(found.get(state, 0)) for state in ("pending", "sent", "quarantined", "local")}

    def pending_reasons(self) -> dict[str, int]:
        """Why measurements still wait: their last upload error (``not tried yet`` when none)."""
        rows = self._db.execute(
            "SELECT coalesce(last_error, 'not tried yet'), count(*) FROM measurements"
            " WHERE state = 'pending' GROUP BY 1 ORDER BY 2 DESC"
        )
        return {reason: count for reason, count in rows}

    def size_bytes(self) -> int:
        (total,) = self._db.execute("SELECT coalesce(sum(size), 0) FROM measurements").fetchone()
        return int(total)

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- small state: last run, last upload error ------------------------------------------------------

    def set_meta(self, key: str, value: dict[str, Any] | None) -> None:
        with self._transaction() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

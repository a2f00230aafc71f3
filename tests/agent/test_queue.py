from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue, QueueFull
from gatewatch.agent.settings import QueueSettings
from gatewatch.core.envelope import public_key_bytes, sign, verify

from .conftest import make_measurement


def test_rows_are_pending_until_sent_and_keep_the_exact_signed_bytes(fill_queue) -> None:
    queue, uids = fill_queue(3)
    assert queue.counts() == {"pending": 3, "sent": 0, "quarantined": 0, "local": 0}
    rows = queue.pending(10)
    assert [r.measurement_uid for r in rows] == uids
    payload, _ = verify(rows[0].envelope)
    assert payload == rows[0].payload and rows[0].measurement()["measurement_uid"] == uids[0]

    assert queue.mark_sent(uids[:2]) == 2
    queue.quarantine(uids[2], "bad_signature")
    assert queue.counts() == {"pending": 0, "sent": 2, "quarantined": 1, "local": 0}
    assert queue.quarantined()[0].reason == "bad_signature"
    queue.quarantine(uids[0], "too late")  # a sent row never goes back
    assert queue.get(uids[0]).state == "sent"  # type: ignore[union-attr]


def test_enqueue_is_idempotent_and_checks_the_envelope(fill_queue, signing_key) -> None:
    queue, uids = fill_queue(1)
    row = queue.pending()[0]
    assert queue.enqueue(row.measurement_uid, row.payload, row.envelope) is False
    assert queue.counts()["pending"] == 1
    other = make_measurement().to_json_bytes()
    with pytest.raises(ValueError):
        queue.enqueue("x" * 36, other, sign(b"different bytes", signing_key))


def test_failures_are_counted_and_explained(fill_queue) -> None:
    queue, uids = fill_queue(2)
    queue.record_failure(uids, "collector.example: http_503")
    queue.record_failure(uids[:1], "collector.example: connection_refused")
    assert queue.pending_reasons() == {
        "collector.example: connection_refused": 1,
        "collector.example: http_503": 1,
    }
    assert queue.get(uids[0]).attempts == 2  # type: ignore[union-attr]


def test_unsent_rows_are_kept_up_to_the_cap_then_refused(fill_queue, signing_key) -> None:
    queue, uids = fill_queue(3, QueueSettings(max_unsent=3))
    m = make_measurement()
    payload = m.to_json_bytes()
    with pytest.raises(QueueFull):
        queue.enqueue(m.measurement_uid, payload, sign(payload, signing_key))
    assert queue.counts()["pending"] == 3
    # Local-only rows (--no-upload) are never uploaded, so they are not held back by the cap.
    local = make_measurement()
    local_payload = local.to_json_bytes()
    assert queue.enqueue(
        local.measurement_uid, local_payload, sign(local_payload, signing_key), local_only=True
    )
    queue.mark_sent(uids[:1])
    assert queue.enqueue(m.measurement_uid, payload, sign(payload, signing_key))
    assert queue.counts() == {"pending": 3, "sent": 1, "quarantined": 0, "local": 1}


def test_sent_rows_are_pruned_oldest_first_and_pending_never(fill_queue) -> None:
    queue, uids = fill_queue(8, QueueSettings(max_sent=2))
    queue.mark_sent(uids[:5])
    assert queue.counts() == {"pending": 3, "sent": 2, "quarantined": 0, "local": 0}
    assert [r.measurement_uid for r in queue.recent(10) if r.state == "sent"] == [uids[4], uids[3]]


def test_size_bound_prunes_sent_then_quarantined_but_keeps_pending(fill_queue) -> None:
    queue, uids = fill_queue(6)
    size = len(queue.pending(1)[0].payload)
    queue.limits = QueueSettings(max_sent=100, max_bytes=max(1024, size * 4))
    queue.quarantine(uids[0], "rejected")
    queue.mark_sent(uids[1:4])
    states = {r.measurement_uid: r.state for r in queue.recent(10)}
    assert uids[0] in states  # quarantined outlives sent rows
    assert sum(s == "sent" for s in states.values()) < 3
    assert states[uids[4]] == states[uids[5]] == "pending"
    assert queue.size_bytes() <= queue.limits.max_bytes

    queue.limits = QueueSettings(max_sent=100, max_bytes=1024)
    queue.prune()
    assert [r.state for r in queue.recent(10)] == ["pending", "pending"]  # over the bound, but kept


def test_meta_and_pragmas(tmp_path: Path) -> None:
    with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
        queue.set_meta("last_run", {"measured": 3})
        assert queue.get_meta("last_run") == {"measured": 3}
        queue.set_meta("last_run", None)
        assert queue.get_meta("last_run") is None
    db = sqlite3.connect(tmp_path / "q.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_one_sync_relaxes_the_per_commit_fsync_only_inside_the_block(tmp_path: Path) -> None:
    with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
        assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with queue.one_sync():
            assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            queue.enqueue("uid-1", b"{}", None)
        assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 2
        with pytest.raises(RuntimeError), queue.one_sync():
            raise RuntimeError("a pass that fails still leaves the queue as it found it")
        assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert (tmp_path / "q.sqlite3-wal").exists()
        queue.sync()
    with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
        assert queue.get("uid-1") is not None


_WRITER = textwrap.dedent(
    """
    import sys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from gatewatch.agent.queue import MeasurementQueue
    from gatewatch.core.envelope import sign
    from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now

    queue = MeasurementQueue(__import__("pathlib").Path(sys.argv[1]))
    key = Ed25519PrivateKey.generate()
    block = queue.one_sync() if sys.argv[2:] == ["one_sync"] else __import__("contextlib").nullcontext()
    block.__enter__()
    for i in range(100000):  # bounded; the test kills it long before
        m = Measurement(measurement_start_time=utc_now(), test_start_time=utc_now(), test_runtime=0,
                        input=f"http://site{i}.example/", test_keys=WebTestKeys())
        payload = m.to_json_bytes()
        queue.enqueue(m.measurement_uid, payload, sign(payload, key))
        if i % 10 == 0:
            queue.mark_sent([m.measurement_uid])
        print(m.measurement_uid, flush=True)  # only after the commit returned
    """
)


@pytest.mark.parametrize("block", ["", "one_sync"])
def test_sigkill_mid_write_leaves_a_consistent_queue_with_every_committed_row(
    tmp_path: Path, block: str
) -> None:
    """Also inside ``one_sync`` (a pass measuring): a commit is in the operating system's hands at once."""
    path = tmp_path / "queue.sqlite3"
    command = [sys.executable, "-c", _WRITER, str(path), *([block] if block else [])]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed: list[str] = []
    deadline = time.monotonic() + 20
    while len(committed) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # lines printed between our last read and the kill were committed too
    proc.wait(timeout=10)
    committed += rest.split()
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) >= 40

    with MeasurementQueue(path) as queue:
        assert queue.integrity_ok()
        rows = {r.measurement_uid: r for r in queue.recent(100000)}
        assert set(committed) <= set(rows)  # nothing acknowledged was lost
        assert len(rows) <= len(committed) + 1  # at most the row in flight at the kill
        for row in rows.values():
            payload, _ = verify(row.envelope)  # no torn row
            assert payload == row.payload
        counts = queue.counts()
        assert counts["pending"] + counts["sent"] == len(rows)


def test_rows_queued_unsigned_are_signed_for_identified_mode(tmp_path, signing_key) -> None:
    with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
        m = make_measurement()
        queue.enqueue(m.measurement_uid, m.to_json_bytes(), None)  # the unlinkable mode's way
        assert queue.pending()[0].signature == ""
        assert queue.sign_unsigned(lambda payload: sign(payload, signing_key)) == 1
        row = queue.pending()[0]
        assert verify(row.envelope) == (m.to_json_bytes(), public_key_bytes(signing_key))
        assert queue.sign_unsigned(lambda payload: sign(payload, signing_key)) == 0

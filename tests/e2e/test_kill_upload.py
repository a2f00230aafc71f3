"""kill -9 of the agent in the middle of its upload, again and again, then a clean restart: every
measurement the agent queued reaches the collector exactly once.

The dangerous moment is the one after the collector has committed a batch and before the agent has marked
it sent: the restarted agent sends that batch again, and only the collector's de-duplication on
``measurement_uid`` keeps it from being stored twice. On loopback that moment lasts microseconds, so the
agent reaches the collector over a slow link (answers arrive late, as on a satellite or congested mobile
network), and uploads in small batches: most kills then land inside it.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab.lab import Lab

from .harness import (
    CollectorProcess,
    LabThread,
    LineReader,
    SlowLink,
    init_agent,
    read_stored,
    run_agent,
    start_agent,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SEED_MEASUREMENTS = 32  # queued by the first pass, uploaded in batches of UPLOAD_BATCH
UPLOAD_BATCH = 4
LINK_DELAY = 0.15  # seconds each answer from the collector takes to reach the agent
KILLS = 6  # attempts, each killed at a random moment after its upload began
# When to kill, after the agent says it is uploading: a random point inside the upload's expected length.
KILL_POINT = (0.1, 0.9)
AGENT_SETTINGS = f"upload_batch = {UPLOAD_BATCH}\nconcurrency = 16\nper_host_concurrency = 16\n"


def queue_state(path: Path) -> tuple[set[str], set[str]]:
    """(every uid, pending uids) of a stopped agent's queue, after checking the file survived the kill."""
    with MeasurementQueue(path) as queue:
        assert queue.integrity_ok(), "the queue file is damaged"
        everything = {row.measurement_uid for row in queue.recent(100_000)}
        pending = {row.measurement_uid for row in queue.pending(100_000)}
    return everything, pending


def kill_during_upload(
    process: subprocess.Popen[str], delay: float, timeout: float = 60.0
) -> tuple[bool, str]:
    """SIGKILL ``delay`` seconds after the agent logs that its upload began. True when it was still
    uploading then (it had not logged the end of its upload)."""
    assert process.stderr is not None and process.stdout is not None
    log, out = LineReader(process.stderr), LineReader(process.stdout)
    try:
        began = log.wait_for('"event": "uploading"', timeout)
        assert began, f"the agent never started uploading:\n{log.text}"
        log.wait_for('"event": "uploaded"', delay)  # returns early if the upload ends first
        finished = any('"event": "uploaded"' in line for line in log.lines)
        alive = process.poll() is None
        if alive:
            os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:  # a failed wait above: do not leave the agent behind
            process.kill()
        process.wait(timeout=10)
        log.join()
        out.join()
    return alive and not finished, log.text


def test_kill_9_mid_upload_then_restart_delivers_everything_exactly_once(
    lab_thread: LabThread, lab: Lab, collector: CollectorProcess, tmp_path: Path
) -> None:
    source = lab.networks["isp-a"].source_address
    link = lab_thread.call(SlowLink.start(("127.0.0.1", collector.port), source, LINK_DELAY))
    try:
        check_exactly_once(lab, collector, link.url, tmp_path)
    finally:
        lab_thread.call(link.close())


def check_exactly_once(lab: Lab, collector: CollectorProcess, collector_url: str, tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    data_dir = tmp_path / "agent"
    init_agent(data_dir, AGENT_SETTINGS)
    queue_path = data_dir / "queue.sqlite3"
    base = lab.url("clean.lab")
    mid_upload = 0
    resent_after_commit = 0  # stored by the collector, but still pending for the killed agent
    for attempt in range(KILLS):
        # The first pass queues many measurements; each later one adds one and uploads what is left.
        inputs = (
            [f"{base}?seed={i}" for i in range(SEED_MEASUREMENTS)]
            if attempt == 0
            else [f"{base}?kill={attempt}"]
        )
        _, pending = queue_state(queue_path) if queue_path.exists() else (set(), set())
        batches = math.ceil((len(pending) + len(inputs)) / UPLOAD_BATCH)
        process = start_agent(lab, "isp-a", data_dir, collector_url, inputs)
        killed, _ = kill_during_upload(process, rng.uniform(*KILL_POINT) * batches * LINK_DELAY)
        mid_upload += killed
        _, pending = queue_state(queue_path)
        stored = {row.measurement_uid for row in read_stored(collector.db_path)}
        resent_after_commit += len(pending & stored)

    final = run_agent(lab, "isp-a", data_dir, collector_url, [f"{base}?final"])
    assert final.returncode == 0, final.stdout + final.stderr

    queued, pending = queue_state(queue_path)
    with MeasurementQueue(queue_path) as queue:
        counts = queue.counts()
    assert not pending and counts["quarantined"] == 0, counts
    # Each killed pass had queued its measurements before it began to upload; the last pass adds one.
    assert len(queued) == SEED_MEASUREMENTS + (KILLS - 1) + 1, len(queued)
    ours = [row for row in read_stored(collector.db_path) if row.input.startswith(base + "?")]
    arrivals = Counter(row.measurement_uid for row in ours)
    missing = queued - set(arrivals)
    doubled = [uid for uid, n in arrivals.items() if n > 1]  # the store's unique uid is what prevents it
    unknown = set(arrivals) - queued
    assert not missing, f"{len(missing)} queued measurements never arrived (seed {seed})"
    assert not doubled, f"stored twice: {doubled} (seed {seed})"
    assert not unknown, f"the collector holds measurements the agent never queued: {unknown} (seed {seed})"
    # The kills must really have landed inside uploads, and some after a commit the agent never heard of,
    # for this test to mean anything.
    assert mid_upload >= KILLS // 2, f"only {mid_upload} of {KILLS} kills landed mid-upload (seed {seed})"
    assert resent_after_commit > 0, f"no kill landed between a commit and its answer (seed {seed})"
    print(f"seed {seed}: {mid_upload} kills mid-upload, {resent_after_commit} re-sent after commit")

"""The daemon as systemd runs it (``gatewatch-agent daemon``), for one pass through the lab: it reads its
test list, measures, and delivers to the real collector, which stores the scenario's verdicts, marked
as a timed run."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab.lab import Lab

from .conftest import queued_uids
from .harness import AGENT_TIMEOUT, CollectorProcess, agent_command, init_agent, read_stored
from .test_verdicts import stored_blocking

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NETWORK = "isp-b"


def test_one_scheduled_pass_measures_and_delivers(
    lab: Lab, collector: CollectorProcess, tmp_path: Path
) -> None:
    if lab.blackhole_mode not in (None, "bpf"):
        pytest.skip(f"blackhole mode {lab.blackhole_mode!r}: the control is dropped too on this kernel")
    data_dir = tmp_path / "agent"
    # one slice: this pass takes the whole list (the daemon's default spreads it over 24 passes)
    init_agent(data_dir, "[daemon]\nslices = 1\n")
    test_list = tmp_path / "list.csv"
    with test_list.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["url", "category_code", "category_description", "date_added", "source", "notes"])
        writer.writerows([url, "NEWS", "", "", "lab", ""] for url in lab.urls())
    command = agent_command(
        "daemon", "--data-dir", str(data_dir), "--passes", "1", "--collector", collector.url,
        "--input-file", str(test_list), "--resolver", lab.resolver, "--ca-file", lab.ca_file,
        "--source-address", lab.networks[NETWORK].source_address, "--routable", "127.0.0.0/8",
        "--upload-delay", "0",
    )  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=AGENT_TIMEOUT, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line).get("event") for line in done.stderr.splitlines() if line.startswith("{")]
    assert "pass_done" in events and "upload_done" in events, done.stderr

    uids = queued_uids(data_dir)
    assert set(uids) == set(lab.urls())
    with MeasurementQueue(data_dir / "queue.sqlite3") as queue:
        assert queue.counts()["sent"] == len(uids)
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    for url, uid in uids.items():
        row = stored[uid]
        assert row.blocking == stored_blocking(lab.expected(url, NETWORK)), url
        assert json.loads(row.payload)["annotations"]["run_type"] == "timed", url

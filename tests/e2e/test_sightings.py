"""Sightings end to end: two real daemons (``gatewatch-agent daemon``, as systemd runs them), one in each
censored lab network, and a collector of their own. Daemon A's scheduled pass meets a gateway block; its
measurements wait their upload delay (ten minutes here), but its sighting goes out with its next poll.
Both daemons poll the confirmation list, measure the sighted URL at once and upload at once, so the
collector reaches the gateway verdict (``/api/v1/interference``) while A's scheduled measurements are still
in its queue. Short settings (one slice, a poll every second) keep the test to seconds; the daemons are
the installed programs, unchanged."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab.lab import Lab

from .harness import CollectorProcess, LineReader, agent_command, init_agent, read_stored

pytestmark = [pytest.mark.lab, pytest.mark.slow]

BLOCKED = "nxdomain.lab"  # the national resolver's NXDOMAIN: gateway-level in both networks
DEADLINE = 25.0  # from the daemons' start to the gateway verdict (the upload delay is 600 s)
SETTINGS = "[daemon]\nslices = 1\nconfirm_poll = 1\n"


def write_list(path: Path, urls: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["url", "category_code", "category_description", "date_added", "source", "notes"])
        writer.writerows([url, "NEWS", "", "", "lab", ""] for url in urls)
    return path


@pytest.fixture
def own_collector(lab: Lab, tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector of this test's own (nothing else's uploads), publishing the lab's URLs as its list."""
    published = write_list(tmp_path / "published.csv", lab.urls())
    process = CollectorProcess(
        tmp_path / "collector", lab, extra_env={"GATEWATCH_TEST_LIST": f"global={published}"}
    )
    process.workdir.mkdir()
    try:
        process.start()
        yield process
    finally:
        process.stop()


def start_daemon(
    lab: Lab, network: str, data_dir: Path, collector: str, urls: list[str]
) -> subprocess.Popen[str]:
    init_agent(data_dir, SETTINGS)
    command = agent_command(
        "daemon", "--data-dir", str(data_dir), "--collector", collector,
        "--input-file", str(write_list(data_dir / "list.csv", urls)), "--resolver", lab.resolver,
        "--ca-file", lab.ca_file, "--source-address", lab.networks[network].source_address,
        "--routable", "127.0.0.0/8", "--upload-delay", "600",
    )  # fmt: skip
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # systemd's stop: no owed upload is made on the way out
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def events(log: LineReader) -> list[dict[str, object]]:
    found = []
    for line in log.lines:
        if line.startswith("{"):
            entry = json.loads(line)
            found.append(entry if isinstance(entry, dict) else {})
    return found


def gateway_row(collector: CollectorProcess, url: str) -> dict[str, object] | None:
    rows = collector.get_json("/api/v1/interference?cc=XL&per=url&scope=all")["results"]
    return next((r for r in rows if r["input"] == url and r["scope"] == "gateway"), None)


def test_a_sighting_brings_the_gateway_verdict_before_the_delayed_upload(
    lab: Lab, own_collector: CollectorProcess, tmp_path: Path
) -> None:
    blocked, clean = lab.url(BLOCKED), lab.url("clean.lab")
    a_dir, b_dir = tmp_path / "agent-a", tmp_path / "agent-b"
    started = time.monotonic()
    # A's slice holds the block and a clean site (the line works); B's only a clean site: B measures the
    # blocked URL only because the collector asks it to.
    daemon_a = start_daemon(lab, "isp-a", a_dir, own_collector.url, [clean, blocked])
    daemon_b = start_daemon(lab, "isp-b", b_dir, own_collector.url, [clean])
    logs = [LineReader(daemon_a.stderr), LineReader(daemon_b.stderr)]  # type: ignore[arg-type]
    row = None
    try:
        while time.monotonic() - started < DEADLINE and row is None:
            assert daemon_a.poll() is None and daemon_b.poll() is None, [log.text for log in logs]
            row = gateway_row(own_collector, blocked)
            time.sleep(0.5)
    finally:
        stop(daemon_a)
        stop(daemon_b)
        for log in logs:
            log.join()
    assert row is not None, f"no gateway verdict within {DEADLINE:g} s:\n" + "\n".join(
        log.text for log in logs
    )
    assert row["networks_affected"] == 2, row

    a_events = events(logs[0])
    assert {"event": "sighting_sent", "listed": 1} in [
        {k: e.get(k) for k in ("event", "listed")} for e in a_events if e.get("event") == "sighting_sent"
    ], logs[0].text
    assert not any(e.get("event") == "upload_done" for e in a_events), "A's delayed upload ran"
    # A's scheduled pass (both URLs) still waits in its queue, and the collector holds none of it: the
    # verdict rests on the two confirmations (A's own and B's), measured and uploaded at once.
    with MeasurementQueue(a_dir / "queue.sqlite3") as queue:
        waiting = {row.measurement_uid: row.measurement()["input"] for row in queue.pending(100)}
        assert sorted(waiting.values()) == sorted([clean, blocked]), waiting
        assert queue.counts()["sent"] == 1
    stored = read_stored(own_collector.db_path)
    assert not set(waiting) & {m.measurement_uid for m in stored}
    assert sorted(m.probe_asn for m in stored if m.input == blocked) == sorted(
        f"AS{lab.networks[n].asn}" for n in ("isp-a", "isp-b")
    )
    # Nothing of the volunteers' addresses in the collector's log (the sighting is not logged with one).
    collector_log = own_collector.log_path.read_text(encoding="utf-8")
    for network in ("isp-a", "isp-b"):
        assert lab.networks[network].source_address not in collector_log

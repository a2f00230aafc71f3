"""A volunteer in the lab's isp-b uploads through a SOCKS5h proxy to the real collector: ``gatewatch-agent
run`` with an agent.toml that names the collector by a name only the proxy knows, plus a direct address
for "where am I". The measurements go straight to the lab's sites, the uploads through the proxy by
name, and `status` shows the path taken."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gatewatch.lab.lab import Lab

from ..agent.proxies import Socks5Server
from .conftest import queued_uids
from .harness import AGENT_TIMEOUT, CollectorProcess, LabThread, agent_command, init_agent, read_stored
from .test_verdicts import stored_blocking

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NETWORK = "isp-b"
COLLECTOR_NAME = "collector.test"  # no resolver knows it: only the proxy does


def test_a_run_uploads_through_socks5h_by_name_and_measures_directly(
    lab: Lab, lab_thread: LabThread, collector: CollectorProcess, tmp_path: Path
) -> None:
    proxy = lab_thread.call(Socks5Server(names={COLLECTOR_NAME: "127.0.0.1"}).start())
    proxy_port = proxy.port
    try:
        data_dir = tmp_path / "agent"
        init_agent(
            data_dir,
            f'proxy = "socks5h://127.0.0.1:{proxy_port}"\n'
            f'[[collectors]]\nurl = "http://{COLLECTOR_NAME}:{collector.port}/"\n'
            f'[[collectors]]\nurl = "{collector.url}/"\nproxy = "direct"\n',
        )
        inputs = lab.urls()[:4]
        command = agent_command(
            "run", "--data-dir", str(data_dir), "--resolver", lab.resolver, "--ca-file", lab.ca_file,
            "--source-address", lab.networks[NETWORK].source_address, "--routable", "127.0.0.0/8",
            *(arg for url in inputs for arg in ("--input", url)),
        )  # fmt: skip
        env = {**os.environ, "COLUMNS": "200"}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=AGENT_TIMEOUT, stdin=subprocess.DEVNULL, env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        status = subprocess.run(
            agent_command("status", "--data-dir", str(data_dir), "--json"),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    finally:
        lab_thread.call(proxy.close())

    uids = queued_uids(data_dir)
    assert set(uids) == set(inputs)
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    info = lab.networks[NETWORK]
    for url, uid in uids.items():  # measured from isp-b itself, not from the proxy's network
        assert (stored[uid].probe_asn, stored[uid].probe_cc) == (f"AS{info.asn}", info.cc), url
        if lab.blackhole_mode in (None, "bpf"):
            assert stored[uid].blocking == stored_blocking(lab.expected(url, NETWORK)), url
    # Every tunnel was to the collector, asked by name; the lab's sites were never reached through it.
    assert proxy.seen and {(s.host, s.port) for s in proxy.seen} == {(COLLECTOR_NAME, collector.port)}
    # Through a proxy the collector sees the proxy's address, not the volunteer's: the claimed network
    # (learned over the direct address) then disagrees with the connection's, and the row says so.
    assert all("asn_mismatch" in stored[uid].flags for uid in uids.values())
    attempts = json.loads(status.stdout)["collector_attempts"]
    uploads = [a for a in attempts if a["call"] == "upload"]
    assert uploads and all(a["kind"] == "proxy" and a["outcome"] == "ok" for a in uploads)
    assert all(f"via socks5h://127.0.0.1:{proxy_port}" in a["address"] for a in uploads)

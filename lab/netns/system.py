"""The whole system inside the namespace lab: a collector abroad, one unmodified agent per ISP.

``gatewatch-collector serve`` runs in the ``outside`` namespace (its control measures from there, beyond
the gateway); ``gatewatch-agent init`` and ``run`` run in each volunteer's namespace with the ISP's
resolver as the system's, ``--packet-trace`` on. ``ip netns exec`` is the only difference from a
volunteer's machine. The collector's answers are read from inside ``outside`` too (the host itself has
no route into the lab). Every step has a time limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..scripts import AGENT, COLLECTOR, console_script
from .lab import NetnsLab
from .scenario import VOLUNTEER_NETWORKS
from .topology import INTL_DNS

__all__ = ["LAB_CC", "NetnsSystemRun", "run_netns_system"]

LAB_CC = "XL"
COLLECTOR_PORT = 8080
READY_DEADLINE = 30.0
AGENT_DEADLINE = 180.0
# Every range of the lab, with the network an ip-location-db CSV gives it (first, last, ASN, name).
RANGES = (
    ("10.77.10.0", "10.77.12.255", "64601", "Netlab ISP A"),
    ("10.77.20.0", "10.77.21.255", "64602", "Netlab ISP B"),
    ("10.77.100.0", "10.77.201.255", "64699", "Netlab Abroad"),
)
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


@dataclass(frozen=True)
class NetnsSystemRun:
    interference: list[dict[str, Any]]  # GET /api/v1/interference?cc=XL
    measurements: list[dict[str, Any]]  # GET /api/v1/measurements?probe_cc=XL
    exported: list[dict[str, Any]]  # GET /api/v1/measurements/export?probe_cc=XL (whole measurements)
    agent_logs: dict[str, str]


def _write_geolocation(workdir: Path) -> tuple[Path, Path]:
    asn, country = workdir / "netlab-asn.csv", workdir / "netlab-country.csv"
    asn.write_text("".join(f"{a},{b},{n},{name}\n" for a, b, n, name in RANGES), encoding="utf-8")
    country.write_text("".join(f"{a},{b},{LAB_CC}\n" for a, b, _, _ in RANGES), encoding="utf-8")
    return asn, country


def _fetch_text(lab: NetnsLab, url: str) -> str:
    done = subprocess.run(
        lab.exec_args("outside", sys.executable, "-c", FETCH, url), capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"GET {url}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _fetch(lab: NetnsLab, url: str) -> Any:
    return json.loads(_fetch_text(lab, url))


def _wait_ready(lab: NetnsLab, base: str, collector: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if collector.poll() is not None:
            raise RuntimeError(f"the collector exited with status {collector.returncode}")
        try:
            _fetch(lab, f"{base}/readyz")
            return
        except (RuntimeError, json.JSONDecodeError):
            time.sleep(0.2)
    raise RuntimeError(f"the collector was not ready within {READY_DEADLINE:g} s")


def _agent_pass(lab: NetnsLab, network: str, base: str, urls: list[str], workdir: Path) -> str:
    volunteer = VOLUNTEER_NETWORKS[network][0]
    data_dir = str(workdir / f"agent-{network}")
    agent = console_script(AGENT)
    init = subprocess.run(lab.exec_args(volunteer, agent, "init", "--yes", "--data-dir", data_dir),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    if init.returncode != 0:
        raise RuntimeError(f"gatewatch-agent init failed in {network}:\n{init.stdout}{init.stderr}")
    args = [agent, "run", "--data-dir", data_dir, "--collector", base, "--ca-file", lab.ca_file,
            "--routable", "10.77.0.0/16", "--packet-trace", "--trace-control-domain", "clean.netlab",
            *(arg for url in urls for arg in ("--input", url))]  # fmt: skip
    done = subprocess.run(
        lab.exec_args(volunteer, *args), capture_output=True, text=True, timeout=AGENT_DEADLINE
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"gatewatch-agent run failed in {network} ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout + done.stderr


def run_netns_system(lab: NetnsLab, workdir: Path) -> NetnsSystemRun:
    """Agents in every ISP measure every scenario URL and upload; what the collector concludes."""
    asn_csv, country_csv = _write_geolocation(workdir)
    host = lab.address("outside")
    base = f"http://{host}:{COLLECTOR_PORT}"
    log = (workdir / "collector.log").open("wb")
    collector = subprocess.Popen(
        lab.exec_args("outside", console_script(COLLECTOR), "serve",
                      "--listen", f"{host}:{COLLECTOR_PORT}", "--db", f"sqlite:///{workdir / 'collector.db'}",
                      "--asn-db", str(asn_csv), "--country-db", str(country_csv),
                      "--control-resolver", INTL_DNS, "--ca-file", lab.ca_file,
                      "--control-allow-net", "10.77.0.0/16"),
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        _wait_ready(lab, base, collector)
        urls = [site.url for site in lab.sites]
        with ThreadPoolExecutor(len(VOLUNTEER_NETWORKS)) as pool:  # the volunteers run at the same time
            passes = {n: pool.submit(_agent_pass, lab, n, base, urls, workdir) for n in VOLUNTEER_NETWORKS}
            logs = {network: future.result() for network, future in passes.items()}
        interference = _fetch(lab, f"{base}/api/v1/interference?cc={LAB_CC}")["results"]
        measurements = _fetch(lab, f"{base}/api/v1/measurements?probe_cc={LAB_CC}&limit=1000")["results"]
        export = _fetch_text(lab, f"{base}/api/v1/measurements/export?probe_cc={LAB_CC}&format=jsonl")
        exported = [json.loads(line) for line in export.splitlines() if line.strip()]
    finally:
        collector.terminate()
        try:
            collector.wait(timeout=15)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait(timeout=5)
        log.close()
    return NetnsSystemRun(interference, measurements, exported, logs)

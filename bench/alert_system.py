"""One lab system for bench/time_to_alert.py: the scenario, the lab in a thread, the collector, Prometheus
and the agents, each run with ports and a folder of its own (several may run at once), all on 127.0.0.0/8.
A helper of the benchmark, not a benchmark: what the script measures and why is in its docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sighting_schedule import DAEMON

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab import Lab
from gatewatch.lab.networks import CENSORED_NETWORKS
from gatewatch.lab.scripts import AGENT, COLLECTOR, console_script

__all__ = ["DAEMON", "GATEWAY_ALERT", "ISP_ALERT", "Run", "get_json"]

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = "15s"  # deploy/prometheus/prometheus.yml's
GATEWAY_ALERT, ISP_ALERT = "GatewayInterferenceBegan", "IspInterferenceAppeared"
STARTUP_TIMEOUT = 90.0
HISTORY_TIMEOUT = 900.0  # one pass over the list from each network, all three at once


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def wait_ready(url: str, seconds: float) -> None:
    """Until ``url`` answers 200 (a process started), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {seconds:g} s")


# --- one lab system --------------------------------------------------------------------------------------


def scenario(path: Path, urls: int, blocked: int, isp_only: int) -> tuple[list[str], list[str], list[str]]:
    """Write the scenario; the blocked domains, the ISP-only ones and the wildcard URLs of the list."""
    lines = ['name = "time-to-alert"', "wildcard = true"]
    gateway = [f"category{i:02d}.lab" for i in range(blocked)]
    for i, name in enumerate(gateway):
        http = i % 2 == 0
        lines += [
            "[[domain]]",
            f'name = "{name}"',
            f'scheme = "{"http" if http else "https"}"',
            f'behaviours = ["{"http_blockpage" if http else "tls_reset"}"]',
            f'blocking = "{"http-diff" if http else "http-failure"}"',
            "switched_on = false",
        ]
    isp = [f"isp-only{i}.lab" for i in range(isp_only)]
    for name in isp:
        lines += [
            "[[domain]]",
            f'name = "{name}"',
            'scheme = "http"',
            'behaviours = ["http_blockpage"]',
            f'networks = ["{CENSORED_NETWORKS[0]}"]',
            f'blocking = {{ {CENSORED_NETWORKS[0]} = "http-diff" }}',
        ]
    path.write_text("\n".join(lines) + "\n")
    clean = max(0, urls - blocked - isp_only)
    wild = [f"{('http', 'https')[i % 2]}://www.site{i:04d}.example/" for i in range(clean)]
    return gateway, isp, wild


class LabThread:
    def __init__(self, scenario_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lab: Lab = asyncio.run_coroutine_threadsafe(Lab.start(scenario_path), self.loop).result(60)

    def switch(self, domains: list[str], on: bool) -> None:
        def flip() -> None:
            for domain in domains:
                self.lab.switch(domain, on)

        self.loop.call_soon_threadsafe(flip)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.lab.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Run:
    """One fresh system: lab, collector, Prometheus, agents (its own ports and folder)."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.agent_dirs: list[Path] = []
        self.blocked, self.isp_only, wild = scenario(
            workdir / "scenario.toml", args.urls, args.blocked, args.isp_only
        )
        self.lab = LabThread(workdir / "scenario.toml")
        lab = self.lab.lab
        lab.issue_certificates(urllib.parse.urlsplit(url).hostname or "" for url in wild if "https" in url)
        listed = [*lab.urls(), *(lab.rewrite_url(url) for url in wild)]
        (workdir / "list.csv").write_text(
            "url,category_code\n" + "".join(f"{url},{category(url)}\n" for url in listed)
        )
        lab.write_asn_csv(workdir / "asn.csv")
        lab.write_country_csv(workdir / "country.csv")
        self.collector_port, self.prometheus_port = free_port(), free_port()
        self.collector = f"http://127.0.0.1:{self.collector_port}"
        self.prometheus = f"http://127.0.0.1:{self.prometheus_port}"

    def spawn(self, command: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        )

    def start_servers(self) -> None:
        lab = self.lab.lab
        env = {**os.environ, "GATEWATCH_CONTROL_SIGNING_SECRET": secrets.token_hex(32)}
        self.spawn([
            console_script(COLLECTOR), "serve", "--listen", f"127.0.0.1:{self.collector_port}",
            "--db", f"sqlite:///{self.workdir / 'collector.db'}",
            "--asn-db", str(self.workdir / "asn.csv"), "--country-db", str(self.workdir / "country.csv"),
            "--control-resolver", lab.resolver, "--ca-file", lab.ca_file,
            "--control-allow-net", "127.0.0.0/8", "--test-list", f"global={self.workdir / 'list.csv'}",
            "--log-level", "WARNING",
        ], "collector", env)  # fmt: skip
        wait_ready(f"{self.collector}/readyz", STARTUP_TIMEOUT)
        (self.workdir / "alerts.yml").write_text(RULES.read_text())
        (self.workdir / "prometheus.yml").write_text(
            f"global: {{scrape_interval: {SCRAPE}, evaluation_interval: {SCRAPE}}}\n"
            "rule_files: [alerts.yml]\nscrape_configs:\n  - job_name: gatewatch-collector\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.collector_port}']}}]\n"
        )
        self.spawn([
            shutil.which("prometheus") or "prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
        ], "prometheus")  # fmt: skip
        wait_ready(f"{self.prometheus}/-/ready", STARTUP_TIMEOUT)

    def start_daemon(self, network: str, n: int) -> None:
        data = self.workdir / f"agent-{network}-{n}"
        if data not in self.agent_dirs:
            self.prepare_agent(network, n)
        self.spawn(
            [console_script(AGENT), "daemon", *self.network_flags(network, data)], f"agent-{network}-{n}"
        )

    def start_agents(
        self, rng: random.Random, slice_period: float, idle_until: Callable[[float], None]
    ) -> float:
        """Every agent at a random moment within one slice period from now (unaligned, as volunteers' are),
        each once ``idle_until`` (which watches the alerts meanwhile) returns; when that period began."""
        agents = [(net, n) for net in CENSORED_NETWORKS for n in range(self.args.agents_per_network)]
        offsets = sorted((rng.uniform(0, slice_period), agent) for agent in agents)
        began = time.monotonic()
        for offset, (network, n) in offsets:
            idle_until(began + offset)
            self.start_daemon(network, n)
        return began

    def prepare_agent(self, network: str, n: int) -> Path:
        data = self.workdir / f"agent-{network}-{n}"
        self.agent_dirs.append(data)
        agent = console_script(AGENT)
        subprocess.run([agent, "init", "--yes", "--data-dir", str(data)], check=True, capture_output=True)
        toml = f'collector_urls = ["{self.collector}/"]\n'
        if self.args.slices is not None:  # only to compare with another slice count
            toml += f"[daemon]\nslices = {self.args.slices}\n"
        (data / "agent.toml").write_text(toml)
        return data

    def measure_history(self) -> None:
        """Before any block, one ``gatewatch-agent run`` over the whole list from each network (uploaded at
        once), as a deployment's last round leaves it: every network's latest measurement of every URL is
        clean, so the gateway verdict must hold against clean measurements older than the block."""
        runs = []
        for network in CENSORED_NETWORKS:
            data = self.prepare_agent(network, 0)
            log = (self.workdir / f"history-{network}.log").open("wb")
            runs.append(subprocess.Popen(
                [console_script(AGENT), "run", *self.network_flags(network, data)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        for run in runs:
            try:
                run.wait(HISTORY_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait(5)
                raise RuntimeError(f"a history pass took over {HISTORY_TIMEOUT:g} s") from None

    def network_flags(self, network: str, data: Path) -> list[str]:
        lab = self.lab.lab
        return [
            "--data-dir", str(data), "--resolver", lab.resolver, "--ca-file", lab.ca_file,
            "--routable", "127.0.0.0/8", "--source-address", lab.networks[network].source_address,
        ]  # fmt: skip

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return get_json(url)["data"]["result"]

    def alerts(self, state: str) -> set[tuple[str, str]]:
        found = self.query(f'ALERTS{{alertstate="{state}"}}')
        return {(r["metric"]["alertname"], r["metric"].get("domain", "")) for r in found}

    def first_anomaly(self) -> float | None:
        """The start time (epoch seconds) of the earliest stored anomaly of a blocked domain, or None."""
        page = get_json(f"{self.collector}/api/v1/measurements?anomaly=true&limit=1000")
        times = [
            utc_seconds(row["measurement_start_time"])
            for row in page["results"]
            if row["domain"] in self.blocked
        ]
        return min(times, default=None)

    def gateway(self) -> bool:
        rows = get_json(f"{self.collector}/api/v1/interference?cc=XL")["results"]
        return any(r["domain"] in self.blocked and r["scope"] == "gateway" for r in rows)

    def first_sighting(self, since: float) -> float | None:
        """The start time (epoch seconds) of the first measurement of a blocked URL made at or after
        ``since`` by any agent, stored or still waiting its upload delay (the agents' queues: read once
        they have stopped). The lab blocks every such URL from ``since`` on, so each is a sighting."""
        times = []
        for data in self.agent_dirs:
            with MeasurementQueue(data / "queue.sqlite3") as queue:
                rows = [row.measurement() for row in queue.recent(10_000)]
            for row in rows:
                started = utc_seconds(row["measurement_start_time"])
                if urllib.parse.urlsplit(row["input"]).hostname in self.blocked and started >= since - 1:
                    times.append(started)
        return min(times, default=None)

    def stop_processes(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop(self) -> None:
        self.stop_processes()
        self.lab.stop()


def utc_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def category(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ""
    return "POLR" if host.startswith("category") else "HUMR" if host.startswith("isp-only") else "NEWS"

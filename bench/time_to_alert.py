"""Time to alert: from a gateway block switched on to Prometheus firing GatewayInterferenceBegan.

    python bench/time_to_alert.py [--runs 5] [--interval 21600] [--slices 24] [--agents-per-network 1]
                                  [--urls 24] [--timeout-minutes 60] [--clean-minutes 0] [--seed N]

Each run starts everything afresh, all on 127.0.0.0/8 (nothing leaves the machine):
  lab         in this process (a thread): the scenario has ``target.lab`` (a national blockpage on http://
              in every censored network, ``switched_on = false``) and ``--urls`` - 1 clean domains;
  collector   ``gatewatch-collector serve`` (SQLite), serving the lab URLs as its global test list (so its
              confirmation requests may list them), geolocating with the lab's CSVs;
  agents      ``gatewatch-agent daemon`` per censored lab network (``--agents-per-network`` each), on the
              daemon's settings (``--interval``/``--slices``; the defaults are the agent's: 6 h, 24 slices,
              confirmation requests polled about once a minute);
  prometheus  Debian's ``prometheus`` with deploy/prometheus/alerts.yml as shipped, scraping every 15 s as
              deploy/prometheus/prometheus.yml does.
After the agents' first slices, the block is switched on at a random moment within one slice period;
the run ends when Prometheus shows GatewayInterferenceBegan firing for target.lab (or at the timeout).
Before the switch, any alert is counted as false. ``--clean-minutes`` adds a separate clean stretch (no
block at all) that counts every alert as false.

Prints, per run, the minutes from switch-on to: the first stored anomaly, the gateway verdict
(gatewatch_interference_scope), the alert firing; then the median. Asserts nothing. The lab has two censored
networks (isp-a, isp-b): the issue's "three networks" needs a third lab network, which the lab does not have.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gatewatch.lab import Lab
from gatewatch.lab.networks import CENSORED_NETWORKS
from gatewatch.lab.scripts import AGENT, COLLECTOR, console_script

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = "15s"  # deploy/prometheus/prometheus.yml's
TARGET = "target.lab"
POLL = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def scenario(path: Path, urls: int) -> None:
    lines = [
        'name = "time-to-alert"',
        "[[domain]]",
        f'name = "{TARGET}"',
        'scheme = "http"',
        'behaviours = ["http_blockpage"]',
        'blocking = "http-diff"',
        "switched_on = false",
    ]
    for i in range(urls - 1):
        lines += ["[[domain]]", f'name = "site{i}.lab"', 'scheme = "http"']
    path.write_text("\n".join(lines) + "\n")


class LabThread:
    def __init__(self, scenario_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lab: Lab = asyncio.run_coroutine_threadsafe(Lab.start(scenario_path), self.loop).result(60)

    def switch(self, on: bool) -> None:
        self.loop.call_soon_threadsafe(self.lab.switch, TARGET, on)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.lab.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Run:
    """One fresh system: lab, collector, Prometheus, agents."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        scenario(workdir / "scenario.toml", args.urls)
        self.lab = LabThread(workdir / "scenario.toml")
        lab = self.lab.lab
        (workdir / "list.csv").write_text(
            "url,category_code\n" + "".join(f"{url},NEWS\n" for url in lab.urls())
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

    def start(self) -> None:
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
        self.wait(f"{self.collector}/readyz", 60)
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
        self.wait(f"{self.prometheus}/-/ready", 60)
        for network in CENSORED_NETWORKS:
            for n in range(self.args.agents_per_network):
                data = self.workdir / f"agent-{network}-{n}"
                agent = console_script(AGENT)
                subprocess.run(
                    [agent, "init", "--yes", "--data-dir", str(data)], check=True, capture_output=True
                )
                (data / "agent.toml").write_text(
                    f'collector_urls = ["{self.collector}/"]\n'
                    f"[daemon]\ninterval = {self.args.interval}\nslices = {self.args.slices}\n"
                    # the default jitter's share of the default interval (1800 s of 6 h)
                    f"jitter = {self.args.interval / 12}\n"
                )
                self.spawn([
                    agent, "daemon", "--data-dir", str(data), "--resolver", lab.resolver,
                    "--ca-file", lab.ca_file, "--routable", "127.0.0.0/8",
                    "--source-address", lab.networks[network].source_address,
                ], f"agent-{network}-{n}")  # fmt: skip

    def wait(self, url: str, seconds: float) -> None:
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

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return get_json(url)["data"]["result"]

    def firing(self) -> set[tuple[str, str]]:
        found = self.query('ALERTS{alertstate="firing"}')
        return {(r["metric"]["alertname"], r["metric"].get("domain", "")) for r in found}

    def anomalies(self) -> int:
        rows = get_json(f"{self.collector}/api/v1/measurements?domain={TARGET}&anomaly=true&limit=10")
        return len(rows["results"])

    def gateway(self) -> bool:
        rows = get_json(f"{self.collector}/api/v1/interference?cc=XL")["results"]
        return any(r["domain"] == TARGET and r["scope"] == "gateway" for r in rows)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.lab.stop()


def one_run(args: argparse.Namespace, rng: random.Random, index: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gatewatch-tta-") as tmp:
        run = Run(args, Path(tmp))
        try:
            run.start()
            slice_period = args.interval / args.slices
            warm = 60.0 + rng.uniform(0, slice_period)  # the agents' first slices, then a random moment
            false_alerts: set[tuple[str, str]] = set()
            end = time.monotonic() + warm
            while time.monotonic() < end:
                false_alerts |= run.firing()
                time.sleep(POLL)
            run.lab.switch(True)
            switched = time.monotonic()
            marks: dict[str, float] = {}
            deadline = switched + args.timeout_minutes * 60
            while time.monotonic() < deadline and "alert" not in marks:
                now = time.monotonic() - switched
                if "anomaly" not in marks and run.anomalies():
                    marks["anomaly"] = now
                if "verdict" not in marks and run.gateway():
                    marks["verdict"] = now
                if ("GatewayInterferenceBegan", TARGET) in run.firing():
                    marks["alert"] = now
                time.sleep(POLL)
            others = {a for a in run.firing() if a[1] != TARGET}
            result = {"run": index, **{k: round(v / 60, 2) for k, v in marks.items()}}
            result["false_alerts"] = len(false_alerts | others)
            print(json.dumps(result), flush=True)
            return result
        finally:
            run.stop()


def clean_stretch(args: argparse.Namespace) -> int:
    """A run with the block never switched on: every alert that fires is false."""
    with tempfile.TemporaryDirectory(prefix="gatewatch-tta-clean-") as tmp:
        run = Run(args, Path(tmp))
        try:
            run.start()
            seen: set[tuple[str, str]] = set()
            end = time.monotonic() + args.clean_minutes * 60
            while time.monotonic() < end:
                seen |= run.firing()
                time.sleep(POLL)
            return len(seen)
        finally:
            run.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=6 * 3600.0, help="the daemon's interval (s)")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--agents-per-network", type=int, default=1)
    parser.add_argument("--urls", type=int, default=24, help="URLs on the test list, the target included")
    parser.add_argument("--timeout-minutes", type=float, default=60.0)
    parser.add_argument("--clean-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if shutil.which("prometheus") is None:
        print("skipped: prometheus is not installed (Debian's prometheus; .ci/run installs it)")
        return 0
    rng = random.Random(args.seed)
    results = [one_run(args, rng, i) for i in range(args.runs)]
    alerted = [r["alert"] for r in results if "alert" in r]
    print(f"runs: {len(results)}, alerted: {len(alerted)} (timeout {args.timeout_minutes:g} min)")
    if alerted:
        median = statistics.median(alerted)
        print(f"median minutes from switch-on to GatewayInterferenceBegan firing: {median:.2f}")
    for name in ("anomaly", "verdict"):
        values = [r[name] for r in results if name in r]
        if values:
            print(f"median minutes to the first {name}: {statistics.median(values):.2f}")
    print(f"false alerts before switch-on: {sum(r['false_alerts'] for r in results)}")
    if args.clean_minutes:
        print(f"false alerts in a clean stretch of {args.clean_minutes:g} min: {clean_stretch(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

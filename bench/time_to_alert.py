"""Time to alert: from a gateway block switched on to Prometheus firing GatewayInterferenceBegan, on the
agent's default daemon settings, with agents in three lab networks.

    python bench/time_to_alert.py [--runs 6] [--parallel 3] [--urls 600] [--blocked 60] [--isp-only 3]
                                  [--agents-per-network 1] [--timeout-minutes 30] [--clean-minutes 0]
                                  [--slices N] [--seed N]

Each run starts everything afresh, all on 127.0.0.0/8 (nothing leaves the machine), with ports and
folders of its own (``--parallel`` runs several at once):
  lab         in this process (a thread), ``wildcard = true``: a test list of ``--urls`` URLs, most of them
              clean wildcard sites (http and https), ``--blocked`` of them one category that the national
              gateway blocks in every censored network once switched on (a blockpage on http://, a reset
              of the ClientHello on https://; ``switched_on = false`` until then), and ``--isp-only``
              domains that ISP A alone blocks the whole time (scope ``isp``: they must never fire the
              gateway alert);
  collector   ``gatewatch-collector serve`` (SQLite), serving that list as its global test list (so its
              confirmation requests may list them), geolocating with the lab's CSVs;
  agents      ``gatewatch-agent daemon`` in isp-a, isp-b and isp-c (``--agents-per-network`` each), on the
              agent's **default** settings: agent.toml names the collector and nothing else (interval,
              jitter, slices, confirmation polls, upload delay as shipped; ``--slices`` only to compare);
              each starts at a random moment within one slice period, as volunteers' agents run unaligned;
  prometheus  Debian's ``prometheus`` with deploy/prometheus/alerts.yml as shipped, scraping every 15 s as
              deploy/prometheus/prometheus.yml does.
The block is switched on at a random moment after every agent has started. A run ends when Prometheus
shows GatewayInterferenceBegan firing for a blocked domain, or at ``--timeout-minutes``.

Prints per run the minutes from switch-on to: the first blocked URL measured (its start time, read from
the agents' queues once they stopped: the sighting), the first such anomaly stored, the gateway verdict,
the alert pending and firing; the false alerts (any alert but GatewayInterferenceBegan for a blocked
domain after switch-on and IspInterferenceAppeared for an ISP-only one); then the medians. The same-run
baseline is the schedule's (bench/sighting_schedule.py): the median time from a random moment to the
first slice of any agent that holds a blocked URL, drawn from the daemon's settings (interval, jitter,
slices), the blocked URLs and the agents; each median is also given as a ratio to it.
``--runs 0 --clean-minutes 30`` runs a clean stretch instead (the category never switched on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from sighting_schedule import schedule_baseline

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.settings import DaemonSettings
from gatewatch.lab import Lab
from gatewatch.lab.networks import CENSORED_NETWORKS
from gatewatch.lab.scripts import AGENT, COLLECTOR, console_script

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = "15s"  # deploy/prometheus/prometheus.yml's
GATEWAY_ALERT, ISP_ALERT = "GatewayInterferenceBegan", "IspInterferenceAppeared"
POLL = 5.0
STOP = threading.Event()  # Ctrl-C: every run ends at its next poll and stops what it started
STARTUP_TIMEOUT = 90.0
DAEMON = DaemonSettings()  # the agent's defaults, read from the agent itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


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
        self.wait(f"{self.collector}/readyz", STARTUP_TIMEOUT)
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
        self.wait(f"{self.prometheus}/-/ready", STARTUP_TIMEOUT)

    def start_agent(self, network: str, n: int) -> None:
        lab, agent = self.lab.lab, console_script(AGENT)
        data = self.workdir / f"agent-{network}-{n}"
        self.agent_dirs.append(data)
        subprocess.run([agent, "init", "--yes", "--data-dir", str(data)], check=True, capture_output=True)
        toml = f'collector_urls = ["{self.collector}/"]\n'
        if self.args.slices is not None:  # only to compare with another slice count
            toml += f"[daemon]\nslices = {self.args.slices}\n"
        (data / "agent.toml").write_text(toml)
        self.spawn([
            agent, "daemon", "--data-dir", str(data), "--resolver", lab.resolver,
            "--ca-file", lab.ca_file, "--routable", "127.0.0.0/8",
            "--source-address", lab.networks[network].source_address,
        ], f"agent-{network}-{n}")  # fmt: skip

    def start_agents(self, rng: random.Random, slice_period: float, watch: Watch) -> None:
        """Every agent at a random moment within one slice period (unaligned, as volunteers' are)."""
        agents = [(net, n) for net in CENSORED_NETWORKS for n in range(self.args.agents_per_network)]
        offsets = sorted((rng.uniform(0, slice_period), agent) for agent in agents)
        began = time.monotonic()
        for offset, (network, n) in offsets:
            watch.idle_until(began + offset)
            self.start_agent(network, n)

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


class Watch:
    """Alerts seen while a run waits: every firing alert not in ``expected`` is a false one."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.expected = {(ISP_ALERT, d) for d in run.isp_only}
        self.false: set[tuple[str, str]] = set()

    def look(self) -> set[tuple[str, str]]:
        firing = self.run.alerts("firing")
        self.false |= firing - self.expected
        return firing

    def idle_until(self, moment: float) -> None:
        while (left := moment - time.monotonic()) > 0 and not STOP.is_set():
            self.look()
            STOP.wait(min(POLL, left))


@contextlib.contextmanager
def workdir(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """A run's own folder: removed afterwards unless ``--keep`` (its logs show where the time went)."""
    if args.keep:
        kept = tempfile.mkdtemp(prefix=prefix)
        print(f"keeping {kept}", flush=True)
        yield kept
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield tmp


def one_run(args: argparse.Namespace, seed: int, index: int) -> dict[str, Any]:
    rng = random.Random(seed)
    slice_period = DAEMON.interval / (args.slices or DAEMON.slices)
    with workdir(args, f"gatewatch-tta-{index}-") as tmp:
        run = Run(args, Path(tmp))
        try:
            run.start_servers()
            watch = Watch(run)
            run.start_agents(rng, slice_period, watch)
            # every agent has started; a random moment within the next half slice period
            watch.idle_until(time.monotonic() + 30 + rng.uniform(0, slice_period / 2))
            run.lab.switch(run.blocked, True)
            switched, switched_wall = time.monotonic(), time.time()
            watch.expected |= {(GATEWAY_ALERT, d) for d in run.blocked}
            marks: dict[str, float] = {}
            deadline = switched + args.timeout_minutes * 60
            while time.monotonic() < deadline and "alert" not in marks and not STOP.is_set():
                now = time.monotonic() - switched
                if "stored" not in marks and run.first_anomaly() is not None:
                    marks["stored"] = now
                if "verdict" not in marks and run.gateway():
                    marks["verdict"] = now
                if "pending" not in marks and any(
                    a[0] == GATEWAY_ALERT and a[1] in run.blocked for a in run.alerts("pending")
                ):
                    marks["pending"] = now
                if any(a[0] == GATEWAY_ALERT and a[1] in run.blocked for a in watch.look()):
                    marks["alert"] = now
                STOP.wait(POLL)
            run.stop_processes()
            if (sighted := run.first_sighting(switched_wall)) is not None:
                marks["sighted"] = max(0.0, sighted - switched_wall)
            result: dict[str, Any] = {"run": index, **{k: round(v / 60, 2) for k, v in marks.items()}}
            result["false_alerts"] = sorted(f"{name}:{domain}" for name, domain in watch.false)
            print(json.dumps(result), flush=True)
            return result
        finally:
            run.stop()


def clean_stretch(args: argparse.Namespace, seed: int) -> list[str]:
    """A run whose category is never switched on: every alert but the ISP-only domains' is false."""
    rng = random.Random(seed)
    with workdir(args, "gatewatch-tta-clean-") as tmp:
        run = Run(args, Path(tmp))
        try:
            run.start_servers()
            watch = Watch(run)
            run.start_agents(rng, DAEMON.interval / (args.slices or DAEMON.slices), watch)
            watch.idle_until(time.monotonic() + args.clean_minutes * 60)
            isp = sorted(d for name, d in watch.look() if name == ISP_ALERT)
            print(json.dumps({"clean_minutes": args.clean_minutes, "isp_alerts_firing": isp}), flush=True)
            return sorted(f"{name}:{domain}" for name, domain in watch.false)
        finally:
            run.stop()


def report(args: argparse.Namespace, results: list[dict[str, Any]], baseline: float) -> None:
    alerted = [r["alert"] for r in results if "alert" in r]
    print(f"runs: {len(results)}, alerted: {len(alerted)} (timeout {args.timeout_minutes:g} min)")
    for name, words in (
        ("sighted", "a blocked URL first measured"),
        ("stored", "its anomaly stored"),
        ("verdict", "the gateway verdict"),
        ("pending", "the alert pending"),
        ("alert", "GatewayInterferenceBegan firing"),
    ):
        values = sorted(r[name] for r in results if name in r)
        if values:
            median = statistics.median(values)
            print(
                f"minutes from switch-on to {words}: median {median:.2f} (min {values[0]:.2f}, "
                f"max {values[-1]:.2f}, n={len(values)}); / schedule baseline: {median / baseline:.2f}"
            )
    print(f"false alerts: {sum(len(r['false_alerts']) for r in results)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=1, help="independent runs at once")
    parser.add_argument("--urls", type=int, default=600, help="URLs on the test list")
    parser.add_argument("--blocked", type=int, default=60, help="URLs of the category switched on")
    parser.add_argument("--isp-only", type=int, default=3, help="domains ISP A alone blocks all along")
    parser.add_argument("--agents-per-network", type=int, default=1)
    parser.add_argument("--slices", type=int, default=None, help="compare: not the agent's default")
    parser.add_argument("--timeout-minutes", type=float, default=30.0)
    parser.add_argument("--clean-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (its logs)")
    args = parser.parse_args()
    if shutil.which("prometheus") is None:
        print("skipped: prometheus is not installed (Debian's prometheus; .ci/run installs it)")
        return 0
    agents = len(CENSORED_NETWORKS) * args.agents_per_network
    slices = args.slices or DAEMON.slices
    print(
        f"daemon: interval {DAEMON.interval:g} s, jitter {DAEMON.jitter:g} s, slices {slices}, "
        f"{args.urls} URLs, {args.blocked} switched on, {agents} agents in {len(CENSORED_NETWORKS)} networks"
    )
    baseline = schedule_baseline(slices, args.blocked, agents)
    print(f"schedule baseline (median minutes to the first slice holding a blocked URL): {baseline:.2f}")
    for other in sorted({24, 72, 216} - {slices}):
        print(f"  the same with slices = {other}: {schedule_baseline(other, args.blocked, agents):.2f}")
    rng = random.Random(args.seed)
    seeds = [rng.randrange(2**32) for _ in range(args.runs + 1)]
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = [pool.submit(one_run, args, seeds[i], i) for i in range(args.runs)]
        try:
            results = [future.result() for future in futures]
        except KeyboardInterrupt:
            STOP.set()  # the pool's exit waits for each run to stop its processes
            for future in futures:
                future.cancel()
            raise
    if results:
        report(args, results, baseline)
    if args.clean_minutes:
        false = clean_stretch(args, seeds[-1])
        print(f"false alerts in a clean stretch of {args.clean_minutes:g} min: {len(false)} {false}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sighting latency: from a gateway block's first observation to the collector's gateway verdict, with the
daemons' sightings on (the default) and off (the same-run baseline).

    python bench/sighting_latency.py [--runs 5] [--scale 60] [--urls 6] [--timeout 180] [--seed N]

Everything runs on 127.0.0.0/8 (nothing leaves the machine): the lab in this process (a thread; a scenario
with ``target.lab``, a national blockpage on http:// in every censored network, and ``--urls`` - 1 clean
domains), and per run and mode a fresh ``gatewatch-collector serve`` (serving the lab's URLs as its global
test list) and one ``gatewatch-agent daemon`` in each censored network (isp-a, isp-b).

**Time scale.** The daemons run the default settings with every duration divided by ``--scale`` (60: a
minute becomes a second): interval 6 h -> 360 s, jitter 30 min -> 30 s, upload delay 5-60 min -> 5-60 s,
confirmation poll 60 s -> 1 s. Only the passes themselves are not scaled (they take what the lab takes),
and ``slices = 1`` so that the first pass meets the block (the figure runs from that observation: the
wait for a slice to reach the URL is the same with and without sightings). The block is on before the
daemons start.

The first observation is the moment a daemon logs a pass that found something blocked; the verdict is
the first ``/api/v1/interference`` answer with ``target.lab`` at scope ``gateway``. Without sightings the
verdict waits for the first delayed upload (then the collector's confirmation list brings the other
network at once); with them, for the next poll. Prints each run, then the medians (in scaled minutes and
real seconds), their spread, and the ratio off / on. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from alert_system import free_port, get_json, wait_ready

from gatewatch.lab import Lab
from gatewatch.lab.networks import CENSORED_NETWORKS
from gatewatch.lab.scripts import AGENT, COLLECTOR, console_script

TARGET = "target.lab"
DEFAULTS = {"interval": 6 * 3600.0, "jitter": 1800.0, "delay": (300.0, 3600.0), "poll": 60.0}


def write_scenario(path: Path, urls: int) -> None:
    lines = ['name = "sighting-latency"', "[[domain]]", f'name = "{TARGET}"', 'scheme = "http"']
    lines += ['behaviours = ["http_blockpage"]', 'blocking = "http-diff"']
    for i in range(urls - 1):
        lines += ["[[domain]]", f'name = "site{i}.lab"', 'scheme = "http"']
    path.write_text("\n".join(lines) + "\n")


class LabThread:
    def __init__(self, scenario: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lab: Lab = asyncio.run_coroutine_threadsafe(Lab.start(scenario), self.loop).result(60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.lab.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FirstBlockedPass:
    """Reads a daemon's log on a thread; notes when it first logs a pass that found something blocked."""

    def __init__(self, stream: IO[str], copy: IO[str]) -> None:
        self.at: float | None = None
        self._thread = threading.Thread(target=self._read, args=(stream, copy), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str], copy: IO[str]) -> None:
        for line in stream:
            copy.write(line)
            if self.at is None and line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "pass_done" and entry.get("blocked", 0) > 0:
                    self.at = time.monotonic()


def scaled_settings(scale: float, sightings: bool, collector: str) -> str:
    low, high = (d / scale for d in DEFAULTS["delay"])
    return (
        f'collector_urls = ["{collector}/"]\nupload_delay = [{low}, {high}]\n'
        f"[daemon]\ninterval = {DEFAULTS['interval'] / scale}\njitter = {DEFAULTS['jitter'] / scale}\n"
        f"slices = 1\nconfirm_poll = {max(1.0, DEFAULTS['poll'] / scale)}\n"
        f"sightings = {'true' if sightings else 'false'}\n"
    )


def one_run(lab: Lab, workdir: Path, args: argparse.Namespace, sightings: bool) -> float | None:
    """Seconds from the first blocked pass to the gateway verdict (None: not within the timeout)."""
    (workdir / "list.csv").write_text("url,category_code\n" + "".join(f"{u},NEWS\n" for u in lab.urls()))
    lab.write_asn_csv(workdir / "asn.csv")
    lab.write_country_csv(workdir / "country.csv")
    port = free_port()
    collector = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    try:
        log = (workdir / "collector.log").open("w")
        logs.append(log)
        processes.append(subprocess.Popen([
            console_script(COLLECTOR), "serve", "--listen", f"127.0.0.1:{port}",
            "--db", f"sqlite:///{workdir / 'collector.db'}",
            "--asn-db", str(workdir / "asn.csv"), "--country-db", str(workdir / "country.csv"),
            "--control-resolver", lab.resolver, "--ca-file", lab.ca_file,
            "--control-allow-net", "127.0.0.0/8", "--test-list", f"global={workdir / 'list.csv'}",
            "--log-level", "WARNING",
        ], stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True))  # fmt: skip
        wait_ready(f"{collector}/readyz", 60)
        readers = []
        for network in CENSORED_NETWORKS:
            data = workdir / f"agent-{network}"
            agent = console_script(AGENT)
            subprocess.run([agent, "init", "--yes", "--data-dir", str(data)], check=True, capture_output=True)
            (data / "agent.toml").write_text(scaled_settings(args.scale, sightings, collector))
            command = [
                agent, "daemon", "--data-dir", str(data), "--input-file", str(workdir / "list.csv"),
                "--resolver", lab.resolver, "--ca-file", lab.ca_file, "--routable", "127.0.0.0/8",
                "--source-address", lab.networks[network].source_address,
            ]  # fmt: skip
            pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
            daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, text=True, **pipes)
            processes.append(daemon)
            copy = (workdir / f"agent-{network}.log").open("w")
            logs.append(copy)
            assert daemon.stderr is not None
            readers.append(FirstBlockedPass(daemon.stderr, copy))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            rows = get_json(f"{collector}/api/v1/interference?cc=XL")["results"]
            if any(r["domain"] == TARGET and r["scope"] == "gateway" for r in rows):
                seen = [r.at for r in readers if r.at is not None]
                return time.monotonic() - min(seen) if seen else None
            time.sleep(0.2)
        return None
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for log in logs:
            log.close()


def describe(values: list[float], scale: float) -> str:
    if not values:
        return "no verdict in any run"
    median = statistics.median(values)
    spread = f"{min(values):.1f}-{max(values):.1f} s"
    return (
        f"median {median:.1f} s real = {median * scale / 60:.1f} scaled min (range {spread}, n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=60.0, help="every default duration divided by this")
    parser.add_argument("--urls", type=int, default=6, help="URLs on the test list, the target included")
    parser.add_argument("--timeout", type=float, default=180.0, help="real seconds per run and mode")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="gatewatch-sighting-") as tmp:
        write_scenario(Path(tmp) / "scenario.toml", args.urls)
        lab = LabThread(Path(tmp) / "scenario.toml")
        try:
            for index in range(args.runs):
                order = [True, False]
                rng.shuffle(order)  # neither mode always runs first on a warmer machine
                for sightings in order:
                    workdir = Path(tmp) / f"run{index}-{'on' if sightings else 'off'}"
                    workdir.mkdir()
                    seconds = one_run(lab.lab, workdir, args, sightings)
                    if seconds is not None:
                        results[sightings].append(seconds)
                    shown = "timeout" if seconds is None else f"{seconds:.1f} s"
                    print(f"run {index} sightings {'on ' if sightings else 'off'}: {shown}", flush=True)
        finally:
            lab.stop()
    print(f"time scale: 1/{args.scale:g} (a default minute is {60 / args.scale:g} s here); slices = 1")
    print(f"sightings off (baseline): {describe(results[False], args.scale)}")
    print(f"sightings on:             {describe(results[True], args.scale)}")
    if results[True] and results[False]:
        ratio = statistics.median(results[False]) / statistics.median(results[True])
        print(f"first observation -> gateway verdict, off / on: {ratio:.1f}x faster with sightings")
    return 0


if __name__ == "__main__":
    sys.exit(main())

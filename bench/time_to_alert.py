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
              before them, one ``gatewatch-agent run`` over the whole list from each network (uploaded at
              once; ``--no-history`` skips it), so that, as in a running deployment, every network's
              latest measurement of every URL is clean when the block begins;
  prometheus  Debian's ``prometheus`` with deploy/prometheus/alerts.yml as shipped, scraping every 15 s as
              deploy/prometheus/prometheus.yml does.
The block is switched on one slice period (and half a minute) after the first agent could start: each
agent's slices then come at a uniformly random phase of their own, as for a block switched on at random.
A run ends when Prometheus shows GatewayInterferenceBegan firing for a blocked domain, or at
``--timeout-minutes``.

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
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alert_system import DAEMON, GATEWAY_ALERT, ISP_ALERT, Run
from sighting_schedule import schedule_baseline

from gatewatch.lab.networks import CENSORED_NETWORKS

POLL = 5.0
SETTLE = 30.0  # seconds after the last agent may have started before the switch: its first pass is done
STOP = threading.Event()  # Ctrl-C: every run ends at its next poll and stops what it started


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
            if args.history:
                run.measure_history()
            watch = Watch(run)
            began = run.start_agents(rng, slice_period, watch.idle_until)
            # A fixed moment after every agent started, each at a uniform moment of one slice period: each
            # agent's schedule is then at a uniform phase of its own, as for a block switched on at random.
            watch.idle_until(began + slice_period + SETTLE)
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
            if args.history:
                run.measure_history()
            watch = Watch(run)
            run.start_agents(rng, DAEMON.interval / (args.slices or DAEMON.slices), watch.idle_until)
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
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the whole list once from each network before the agents start (default: on)",
    )
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

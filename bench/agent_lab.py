"""The real agent over the real test lists (kh + global) through the emulated network: peak RSS and wall time.

    python bench/agent_lab.py [--latency-ms 20] [--concurrency 32] [--lists ../shared/data/test-lists]
                              [--limit N] [--no-upload] [--repeat N]

Three processes, everything on 127.0.0.0/8 (nothing leaves the machine):
  lab        ``Lab(latency_ms=..., wildcard=True)`` (a child process): every unlisted name is a clean site,
             and every server answers one ``latency_ms`` late, so each step of a measurement costs one
             emulated round trip (DNS 1, TCP 1, TLS 1, HTTP 1).
  collector  ``gatewatch-collector serve`` on 127.0.0.1, SQLite in a temporary directory, geolocating with
             the lab's ASN/country CSVs, its control measuring through the lab from the clean vantage.
  agent      ``gatewatch-agent run`` from ISP A (source 127.65.0.10), exactly as the CLI runs it: test list
             file, geolocate, measure, control per URL, analyse, scrub, sign, queue, upload.

Real URLs carry no port, but the lab's ports are unprivileged ones chosen at start: each URL is rewritten
to the lab's port for its scheme (``Lab.rewrite_url``) into a CSV in the temporary directory (the lists are
never copied into the repository). IP-literal URLs (DoH endpoints such as ``https://1.1.1.1/``) become a
wildcard site's address, so no packet can go to the real one.

Three lower bounds for the pass, each over every URL and divided by the agent's concurrency:
  round_trip_bound_s     the probe's own round trips (DNS 1 unless the host is an IP literal, TCP 1, TLS 1
                         for https, HTTP 1, each ``latency_ms``): no pass at that concurrency can be faster.
  critical_path_bound_s  what this design must wait for: a URL holds one of the ``concurrency`` network slots
                         for its probe trips, and stays in memory (at most IN_FLIGHT_PER_SLOT x concurrency
                         URLs, agent/runner.py) until its control is in and its DNS has lingered: the control
                         is asked once the probe's DNS answered (it is given the probe's addresses) and
                         measured by the collector meanwhile (no listening for late replies there), and the
                         probe's DNS keeps listening 0.25 s after its first reply for an injector's second
                         answer; so the pass takes at least the larger of the round-trip bound and the sum
                         over URLs of max(probe trips, DNS + control trips, DNS + linger) divided by the
                         in-flight bound.
  cpu_floor_s            the CPU seconds the agent, the lab and the collector spent, divided by the cores:
                         on a small machine all three share, no pass can be faster than that either (a
                         slight over-estimate: it includes the agent's and collector's start-up and the
                         upload, which are outside the measuring time).
The ratios are of the measuring time (first to last measurement, from the agent's own log) to each.
Certificates of the lab's wildcard sites are issued before the pass, as real sites have theirs.

The agent's modules are compiled before the first pass, as a wheel install has them (bytecode_env).

The agent's peak RSS comes from wait4() on its process alone (the lab and collector are not counted).
Whether scapy or aiohttp was imported is read inside the agent process at exit. Prints figures; asserts
nothing.

``--repeat N`` (N >= 2) runs N passes, each after a pass of the bare DNS+TCP+TLS+HTTP loop of
bench/probe_floor.py over the same lab URLs at the same concurrency (in this process, while the agent is
not running), and prints the agent's CPU per URL (its whole process) and its measuring time per URL, each
over the loop's, median and spread. The main figures are then the last pass's.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent_imports import EXIT_RECORD, PROFILE_ENV, bytecode_env
from probe_floor import floor_pass, spread, start_lab, stop_lab

from gatewatch.agent.pacing import IN_FLIGHT_PER_SLOT
from gatewatch.lab.scripts import COLLECTOR, console_script

REPO = Path(__file__).resolve().parent.parent
LISTS = ("kh.csv", "global.csv")
ISP_SOURCE = "127.65.0.10"  # ISP A's vantage in the lab (gatewatch.lab.networks)
DNS_LINGER = 0.25  # DNSConfig's default, the agent's probe (the collector's control does not linger)
STARTUP_TIMEOUT = 60.0
# The agent's own process, as its console script runs it, plus one line at exit saying whether scapy or
# aiohttp was ever imported in it (see agent_imports.py; -P: bench/ stays off the agent's sys.path).
AGENT = [sys.executable, "-P", str(Path(__file__).resolve().parent / "agent_imports.py")]


def read_urls(lists: Path) -> dict[str, str]:
    """URL -> category code, in file order, each URL once (as written; the agent canonicalises them)."""
    urls: dict[str, str] = {}
    for name in LISTS:
        with (lists / name).open(encoding="utf-8", newline="") as rows:
            for row in csv.DictReader(rows):
                url = (row.get("url") or "").strip()
                if url and url not in urls:
                    urls[url] = (row.get("category_code") or "MISC").strip()
    return urls


def serve_lab(conn: Any, stop: Any, latency_ms: float, urls: list[str], directory: str) -> None:
    """The lab's process: start it, rewrite the URLs, write the geolocation CSVs, serve until told."""
    import asyncio

    from gatewatch.lab import Lab

    async def run() -> None:
        async with Lab(latency_ms=latency_ms, wildcard=True) as lab:
            lab.write_asn_csv(Path(directory) / "asn.csv")
            lab.write_country_csv(Path(directory) / "country.csv")
            rewritten = []
            for url in urls:
                try:
                    rewritten.append((url, lab.rewrite_url(url)))
                except ValueError:
                    rewritten.append((url, None))
            # Real sites have their certificates before anyone connects: issue them before the pass, so
            # that the lab's CPU during the pass is spent serving, as the agent's and collector's is.
            started = time.perf_counter()
            issued = lab.issue_certificates(urlsplit(new).hostname or "" for _, new in rewritten if new)
            prepared = {"certificates_issued": issued, "seconds": round(time.perf_counter() - started, 2)}
            conn.send(
                {"resolver": lab.resolver, "ca_file": lab.ca_file, "urls": rewritten, "prepared": prepared}
            )
            ready[0] = time.process_time()  # the lab's CPU from here on is what the pass costs it
            await asyncio.to_thread(stop.wait, 3600)  # bounded: never outlives a stuck parent long

    ready = [0.0]
    asyncio.run(run())
    conn.send({"cpu_s": time.process_time() - ready[0]})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:  # bounded in time; each attempt waits at most 1 s
        if proc.poll() is not None:
            raise RuntimeError(f"the collector exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the collector was not ready within {STARTUP_TIMEOUT:g} s")


def round_trips(url: str) -> tuple[int, bool]:
    """(round trips of one probe measurement of ``url``, whether it starts with a DNS lookup)."""
    parts = urlsplit(url)
    try:
        ipaddress.ip_address(parts.hostname or "")
        dns = False
    except ValueError:
        dns = True
    return int(dns) + 1 + int(parts.scheme == "https") + 1, dns


def url_bounds(url: str, latency: float, control: bool) -> tuple[float, float]:
    """(the probe's round trips, the critical path of one URL), in seconds."""
    trips, dns = round_trips(url)
    probe = trips * latency
    dns_s = latency if dns else 0.0
    path = max(probe, dns_s + DNS_LINGER if dns else 0.0)
    if control:
        path = max(path, dns_s + trips * latency)  # the collector's own DNS/TCP/TLS/HTTP, after ours
    return probe, path


def rss_mib(pid: int) -> float | None:
    """The resident set of ``pid`` now (Linux /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class AgentLog:
    """Reads the agent's JSON log lines (stderr) as they come, timing the pass from outside the agent and
    noting its resident set when it starts measuring and after each quarter of the list."""

    def __init__(self, stream: Any, pid: int) -> None:
        self.pid = pid
        self.times: dict[str, float] = {}
        self.rss: dict[str, float | None] = {}
        self.verdicts: dict[str, int] = {}
        self.exit: dict[str, Any] = {}
        self.other: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:  # ends when the agent closes stderr (at exit)
            line = raw.decode("utf-8", "replace").strip()
            try:
                record = json.loads(line)
            except ValueError:
                self.other.append(line)
                continue
            if record.get("bench") == EXIT_RECORD:
                self.exit = record
                continue
            event = record.get("event")
            if event in ("started", "stopped", "uploading", "uploaded"):
                self.times.setdefault(event, time.perf_counter())
                self.rss.setdefault(event, rss_mib(self.pid))
            if event == "measured":
                verdict = str(record.get("verdict"))
                self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
                done, total = record.get("done", 0), max(1, record.get("total", 1))
                self.rss.setdefault(f"measured {100 * done // total // 25 * 25}%", rss_mib(self.pid))
            elif record.get("level") in ("warning", "error"):
                self.other.append(line)

    def join(self) -> None:
        self._thread.join(timeout=10)


def run_agent(
    args: argparse.Namespace,
    tmp: Path,
    lab: dict[str, Any],
    collector: str | None,
    name: str,
    env: dict[str, str],
) -> dict[str, Any]:
    data_dir = tmp / name
    subprocess.run(
        [*AGENT, "init", "--yes", "--data-dir", str(data_dir)], check=True, capture_output=True, env=env
    )
    command = [
        *AGENT, "run",
        "--data-dir", str(data_dir),
        "--input-file", str(tmp / "lab-list.csv"),
        "--resolver", lab["resolver"],
        "--ca-file", lab["ca_file"],
        "--source-address", ISP_SOURCE,
        "--routable", "127.0.0.0/8",
        "--concurrency", str(args.concurrency),
        "--max-runtime", "3000",
    ]  # fmt: skip
    command += ["--collector", collector] if collector else ["--no-upload"]
    # cProfile (CPU time) around the whole agent process: its figures then include the profiler's cost.
    env = {**env, PROFILE_ENV: str(args.profile)} if args.profile is not None else env
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    log = AgentLog(proc.stderr, proc.pid)
    # wait4 reaps this one child and returns its own rusage: the lab and the collector are not in it.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.join()
    return {"returncode": proc.returncode, "wall": wall, "started": started, "usage": usage, "log": log}


def write_lab_list(path: Path, pairs: list[tuple[str, str]], categories: dict[str, str]) -> None:
    """The lists' URLs, rewritten onto the lab, as a Citizen Lab CSV the agent reads."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["url", "category_code", "category_description", "date_added", "source", "notes"])
        writer.writerows([lab_url, categories[url], "", "", "bench", ""] for url, lab_url in pairs)


def start_collector(
    args: argparse.Namespace, tmp: Path, lab: dict[str, Any], port: int
) -> subprocess.Popen[bytes]:
    """A real collector on loopback: the lab's geolocation, its resolver and CA for the controls."""
    return subprocess.Popen(
        [
            console_script(COLLECTOR),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            f"sqlite:///{tmp / 'collector.sqlite3'}",
            "--asn-db",
            str(tmp / "asn.csv"),
            "--country-db",
            str(tmp / "country.csv"),
            "--control-resolver",
            lab["resolver"],
            "--ca-file",
            lab["ca_file"],
            "--control-allow-net",
            "127.0.0.0/8",
            # A lab operator's settings: one agent sends every control request and every
            # batch, so the public defaults (a few per second) would measure the limiter.
            "--control-concurrency",
            str(args.concurrency),
            "--control-rate",
            "10000",
            "--control-burst",
            "10000",
            "--log-level",
            "WARNING",
        ],  # fmt: skip
        env={**os.environ, "GATEWATCH_KEY_RATE": "1000", "GATEWATCH_KEY_BURST": "1000"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(args: argparse.Namespace) -> int:
    if not all((args.lists / name).is_file() for name in LISTS):
        print(f"skipped: the shared test lists are absent ({args.lists}); nothing measured")
        return 0
    categories = read_urls(args.lists)
    urls = list(categories)[: args.limit]
    floors: list[dict[str, float]] = []
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gatewatch-agent-lab-") as tmp_name:
        tmp = Path(tmp_name)
        lab_proc, parent, stop, lab = start_lab(args.latency_ms, urls, tmp_name)
        collector_proc: subprocess.Popen[bytes] | None = None
        others: dict[str, Any] = {"lab_cpu_s": None, "collector_cpu_s": None, "lab_prepared": lab["prepared"]}
        try:
            pairs = [(url, lab_url) for url, lab_url in lab["urls"] if lab_url is not None]
            write_lab_list(tmp / "lab-list.csv", pairs, categories)
            collector = None
            if not args.no_upload:
                port = free_port()
                collector = f"http://127.0.0.1:{port}/"
                collector_proc = start_collector(args, tmp, lab, port)
                wait_ready(f"{collector}readyz", collector_proc)
            env = bytecode_env()
            for run in range(args.repeat):  # the floor and the agent alternate, so both see the same load
                if args.repeat > 1:
                    lab_urls = [lab_url for _, lab_url in pairs]
                    floors.append(floor_pass(lab_urls, args.concurrency, lab["ca_file"], lab["resolver"]))
                results.append(run_agent(args, tmp, lab, collector, f"agent-{run}", env))
        finally:
            if collector_proc is not None:
                others["collector_cpu_s"] = stop_collector(collector_proc)
            others["lab_cpu_s"] = stop_lab(lab_proc, parent, stop)
    if args.repeat > 1:
        others["lab_cpu_s"] = others["collector_cpu_s"] = None  # spent over every pass, the floor's too
    print_figures(args, urls, pairs, results[-1], collector is not None, others)
    if floors:
        print_floor_ratios(pairs, floors, results)
    return 0


def print_floor_ratios(
    pairs: list[tuple[str, str]], floors: list[dict[str, float]], results: list[dict[str, Any]]
) -> None:
    """The agent's CPU (its whole process: start-up, measuring, upload) and measuring time per URL, each
    over the bare loop's (bench/probe_floor.py) in the same run, median and spread over the passes."""
    n = max(1, len(pairs))
    cpu_ratios, wall_ratios = [], []
    for floor, result in zip(floors, results, strict=True):
        usage, times = result["usage"], result["log"].times
        cpu_ratios.append((usage.ru_utime + usage.ru_stime) / n * 1000 / floor["cpu_ms_per_url"])
        if {"started", "stopped"} <= times.keys():
            wall_ratios.append((times["stopped"] - times["started"]) / n * 1000 / floor["wall_ms_per_url"])
    agent_cpu = [1000 * (r["usage"].ru_utime + r["usage"].ru_stime) / n for r in results]
    figures = {
        "passes": len(floors),
        "floor_cpu_ms_per_url": spread([f["cpu_ms_per_url"] for f in floors]),
        "floor_wall_ms_per_url": spread([f["wall_ms_per_url"] for f in floors]),
        "agent_cpu_ms_per_url": spread(agent_cpu),
        "agent_cpu_over_floor": spread(cpu_ratios),
        "agent_measuring_over_floor_wall": spread(wall_ratios) if wall_ratios else None,
    }
    print(json.dumps(figures, indent=2))


def stop_collector(proc: subprocess.Popen[bytes]) -> float | None:
    """SIGTERM (the collector drains and exits), SIGKILL if it does not within 15 s; its CPU seconds."""
    proc.terminate()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # bounded: 15 s of 0.1 s polls
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=5)
    return None


def print_figures(
    args: argparse.Namespace,
    urls: list[str],
    pairs: list[tuple[str, str]],
    result: dict[str, Any],
    control: bool,
    others: dict[str, Any],
) -> None:
    latency = args.latency_ms / 1000
    probe_total = path_total = 0.0
    for _, lab_url in pairs:
        probe, path = url_bounds(lab_url, latency, control)
        probe_total += probe
        path_total += path
    bound = probe_total / args.concurrency
    critical = max(bound, path_total / (IN_FLIGHT_PER_SLOT * args.concurrency))
    log: AgentLog = result["log"]
    times = log.times
    measuring = times["stopped"] - times["started"] if {"started", "stopped"} <= times.keys() else None
    wall = result["wall"]
    usage = result["usage"]
    cpu = [usage.ru_utime + usage.ru_stime, others.get("lab_cpu_s"), others.get("collector_cpu_s")]
    cpu_floor = (
        sum(c for c in cpu if c) / (os.cpu_count() or 1) if None not in cpu[1:] or not control else None
    )
    figures = {
        "urls_in_lists": len(urls),
        "urls_given_to_agent": len(pairs),
        "measured": sum(log.verdicts.values()),
        "verdicts": log.verdicts,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "control_and_upload": control,
        "agent_exit_code": result["returncode"],
        "wall_s": round(wall, 2),
        "startup_s": round(times["started"] - result["started"], 2) if "started" in times else None,
        "measuring_s": round(measuring, 2) if measuring is not None else None,
        "upload_s": round(times["uploaded"] - times["uploading"], 2)
        if {"uploading", "uploaded"} <= times.keys()
        else None,
        "round_trip_bound_s": round(bound, 2),
        "critical_path_bound_s": round(critical, 2),
        "cpu_floor_s": round(cpu_floor, 2) if cpu_floor else None,
        "measuring_over_round_trip_bound": round(measuring / bound, 2) if measuring and bound else None,
        "measuring_over_critical_path": round(measuring / critical, 2) if measuring and critical else None,
        "measuring_over_cpu_floor": round(measuring / cpu_floor, 2) if measuring and cpu_floor else None,
        "agent_peak_rss_mib": round(result["usage"].ru_maxrss / 1024, 1),
        "agent_rss_mib_by_stage": {k: round(v, 1) for k, v in log.rss.items() if v is not None},
        "agent_cpu_s": round(result["usage"].ru_utime + result["usage"].ru_stime, 1),
        "agent_cpu_user_system_s": [round(result["usage"].ru_utime, 1), round(result["usage"].ru_stime, 1)],
        "scapy_imported": log.exit.get("scapy_imported"),
        "aiohttp_imported": log.exit.get("aiohttp_imported"),
        # The machine's other work during the pass: on few cores, CPU is what stretches the wall time.
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in others.items() if v is not None},
        "cpu_cores": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    for line in log.other[:10]:
        print(f"agent said: {line[:300]}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=Path, default=REPO.parent / "shared" / "data" / "test-lists")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N URLs (a quick try).")
    parser.add_argument("--no-upload", action="store_true", help="No collector: no control, no upload.")
    parser.add_argument("--profile", type=Path, default=None, help="Write the agent's cProfile stats here.")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Passes; with 2 or more the bare loop (probe_floor.py) runs before each; prints the ratio.",
    )
    sys.exit(main(parser.parse_args()))

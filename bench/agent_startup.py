"""The agent's start-up: CPU seconds of ``gatewatch-agent --help`` and of ``gatewatch-agent run`` over one
URL through the emulated network, next to a bare ``python -c pass`` measured in the same run.

    python bench/agent_startup.py                 # 5 runs of each, median [min-max]
    python bench/agent_startup.py --repeat 9 --profile /tmp/agent.prof   # and one run under cProfile

The agent runs as ``python -m gatewatch.agent.cli`` in its own process; its CPU (user + system) comes from
wait4() on that process alone. The URL is the first of the shared test lists (kh + global), rewritten to
the lab's own site as bench/agent_lab.py does; a real collector on 127.0.0.1 answers the control request
and takes the upload, so the run is what a volunteer's ``gatewatch-agent run`` over one URL does. Nothing
leaves 127.0.0.0/8. The ratio of each figure is to the bare interpreter's start-up.

Bytecode: pip writes a wheel's ``.pyc`` files when it installs the agent, so a volunteer's start-up never
compiles the sources. This machine may set PYTHONDONTWRITEBYTECODE (then every start compiles every
gatewatch module again, ~0.1 s here): the children run with a bytecode cache in a temporary folder
(PYTHONPYCACHEPREFIX, nothing written beside the sources), filled by one untimed run of each command first.
The "no bytecode cache" line shows what that costs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from agent_lab import (
    ISP_SOURCE,
    LISTS,
    STARTUP_TIMEOUT,
    free_port,
    read_urls,
    serve_lab,
    start_collector,
    stop_collector,
    wait_ready,
    write_lab_list,
)

AGENT = [sys.executable, "-m", "gatewatch.agent.cli"]


CACHED_ENV: dict[str, str] = {}  # the children's environment, with a bytecode cache (set in main)


def cpu_seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    """User + system CPU of one child process (and only it), which must exit 0."""
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env if env is not None else CACHED_ENV
    )
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:5]} failed: {errors.decode(errors='replace')[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def figure(samples: list[float], base: float) -> str:
    median = statistics.median(samples)
    return f"{median:.3f} s  [{min(samples):.3f}-{max(samples):.3f}]  {median / base:.1f}x"


def run_command(tmp: Path, lab: dict[str, object], collector: str) -> list[str]:
    return [
        "run",
        "--data-dir", str(tmp / "agent"),
        "--input-file", str(tmp / "lab-list.csv"),
        "--resolver", str(lab["resolver"]),
        "--ca-file", str(lab["ca_file"]),
        "--source-address", ISP_SOURCE,
        "--routable", "127.0.0.0/8",
        "--max-runtime", "120",
        "--upload-delay", "0",
        "--collector", collector,
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--lists", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/test-lists"
    )
    parser.add_argument("--profile", type=Path, help="also run the agent once under cProfile, to this file")
    parser.add_argument(
        "--importtime", type=Path, help="also run the agent once with -X importtime, to this file"
    )
    parser.add_argument("--concurrency", type=int, default=1)  # the collector's control concurrency
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatewatch-pycache-") as pycache:
        no_cache = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        CACHED_ENV.update({k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
        CACHED_ENV["PYTHONPYCACHEPREFIX"] = pycache
        return measure(args, no_cache)


def measure(args: argparse.Namespace, no_cache: dict[str, str]) -> int:
    bare = [cpu_seconds([sys.executable, "-c", "pass"]) for _ in range(args.repeat)]
    base = statistics.median(bare)
    cpu_seconds([*AGENT, "--help"])  # fills the bytecode cache
    helps = [cpu_seconds([*AGENT, "--help"]) for _ in range(args.repeat)]
    uncached = [cpu_seconds([*AGENT, "--help"], no_cache) for _ in range(args.repeat)]
    print(f"python -c pass (baseline):         {figure(bare, base)}")
    print(f"gatewatch-agent --help:            {figure(helps, base)}")
    print(f"  the same, no bytecode cache:     {figure(uncached, base)}")
    if not all((args.lists / name).is_file() for name in LISTS):
        print(f"skipped the run over one URL: the shared test lists are absent ({args.lists})")
        return 0
    url = next(iter(read_urls(args.lists)))
    with tempfile.TemporaryDirectory(prefix="gatewatch-agent-startup-") as tmp_name:
        tmp = Path(tmp_name)
        context = mp.get_context("spawn")
        parent, child = context.Pipe()
        stop = context.Event()
        lab_proc = context.Process(target=serve_lab, args=(child, stop, 0.0, [url], tmp_name), daemon=True)
        lab_proc.start()
        collector_proc = None
        try:
            if not parent.poll(STARTUP_TIMEOUT):
                raise RuntimeError("the lab did not start")
            lab = parent.recv()
            pairs = [(old, new) for old, new in lab["urls"] if new is not None]
            write_lab_list(tmp / "lab-list.csv", pairs, {url: "NEWS"})
            port = free_port()
            collector = f"http://127.0.0.1:{port}/"
            collector_proc = start_collector(args, tmp, lab, port)
            wait_ready(f"{collector}readyz", collector_proc)
            subprocess.run(
                [*AGENT, "init", "--yes", "--data-dir", str(tmp / "agent")], check=True, capture_output=True
            )
            command = [*AGENT, *run_command(tmp, lab, collector)]
            cpu_seconds(command)  # fills the bytecode cache for the modules a run adds
            runs = [cpu_seconds(command) for _ in range(args.repeat)]
            print(f"gatewatch-agent run over 1 URL:    {figure(runs, base)}")
            if args.importtime:
                with args.importtime.open("wb") as out:
                    subprocess.run([sys.executable, "-X", "importtime", *command[1:]], stderr=out, check=True,
                                   stdout=subprocess.DEVNULL, env=CACHED_ENV)  # fmt: skip
                print(f"-X importtime of one run: {args.importtime}")
            if args.profile:
                cpu_seconds([sys.executable, "-m", "cProfile", "-o", str(args.profile), *command[1:]])
                print(f"profile of one run: {args.profile}")
        finally:
            if collector_proc is not None:
                stop_collector(collector_proc)
            stop.set()
            lab_proc.join(timeout=15)
            if lab_proc.is_alive():
                lab_proc.kill()
                lab_proc.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

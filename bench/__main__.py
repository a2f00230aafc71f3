"""Run every benchmark and write bench/RESULTS.md:

    python -m bench              # every script with its default size (tens of minutes on a busy machine)
    python -m bench --quick      # small sizes, the slow ones left out (a minute or two: a smoke test)
    python -m bench --only ingest.py --only export.py

Each script runs in its own process (``python bench/NAME.py ...``, as its own docstring says to run it),
one after the other, each with a time limit; one that fails or times out is reported and the run goes on.
A script that needs what this machine lacks (the shared test lists, PostgreSQL's binaries) is skipped with
the reason. The runner measures its own machine baseline before and after the scripts (bench/results.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.results import (
    BENCHES,
    HERE,
    SHARED_LISTS,
    Bench,
    BenchRun,
    MachineBaseline,
    figure_lines,
    render,
    unlisted_scripts,
)

REPO = HERE.parent
FULL_TIMEOUT = 900.0
QUICK_TIMEOUT = 120.0
BASELINE_SECONDS = 1.0  # per reference workload


def machine_baseline() -> MachineBaseline:
    """A fixed pure-Python loop and repeated Ed25519 verification, each for about BASELINE_SECONDS."""

    def rate(step: object) -> float:
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < BASELINE_SECONDS:
            step()  # type: ignore[operator]
            done += 1
        return done / elapsed

    def loop() -> None:
        total = 0
        for i in range(1000):
            total += i * i % 7

    key = Ed25519PrivateKey.generate()
    message = b"gatewatch" * 50
    signature, public = key.sign(message), key.public_key()
    return MachineBaseline(rate(loop), rate(lambda: public.verify(signature, message)))


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "load average at start (1, 5, 15 min)": load,
        "system": platform.platform(),
        "Python": platform.python_version(),
    }


def _missing(bench: Bench) -> str:
    if bench.needs_shared_lists and not SHARED_LISTS.is_dir():
        return f"needs the shared test lists ({SHARED_LISTS})"
    if bench.needs_postgres and not _postgres_available():
        return "needs PostgreSQL's initdb and pg_ctl"
    return ""


def _postgres_available() -> bool:
    found = shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return bool(found)


def run_one(bench: Bench, quick: bool) -> BenchRun:
    args = bench.quick_args if quick else bench.args
    command = [sys.executable, str(HERE / bench.name), *(args or ())]
    shown = shlex.join(["python", f"bench/{bench.name}", *(args or ())])
    if quick and bench.quick_args is None:
        return BenchRun(bench, shown, skipped="left out of a quick run")
    if reason := _missing(bench):
        return BenchRun(bench, shown, skipped=reason)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=QUICK_TIMEOUT if quick else FULL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        return BenchRun(bench, shown, time.perf_counter() - started, None, "", output or "", timed_out=True)
    output = done.stdout + (f"\n[stderr]\n{done.stderr}" if done.returncode and done.stderr else "")
    return BenchRun(
        bench,
        shown,
        time.perf_counter() - started,
        done.returncode,
        "",
        output,
        figures=figure_lines(done.stdout),
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; slow scripts left out")
    parser.add_argument("--only", action="append", default=[], help="run only this script (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if unlisted := unlisted_scripts():
        parser.error(f"not listed in bench/results.py BENCHES: {', '.join(unlisted)}")
    unknown = set(args.only) - {bench.name for bench in BENCHES}
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    chosen = [bench for bench in BENCHES if not args.only or bench.name in args.only]
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = machine()
    before = machine_baseline()
    runs = []
    for bench in chosen:
        print(f"{bench.name} ...", end=" ", flush=True)
        run = run_one(bench, args.quick)
        print(
            run.skipped or ("timed out" if run.timed_out else f"exit {run.returncode}, {run.seconds:.1f} s")
        )
        runs.append(run)
    after = machine_baseline()
    report = render(machine=about, date=date, command=command, before=before, after=after, runs=runs)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(run.skipped or run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

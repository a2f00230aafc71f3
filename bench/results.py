"""What ``python -m bench`` runs and how it writes ``bench/RESULTS.md`` (pure: no process is started here).

Every script under bench/ is listed in ``BENCHES`` with its arguments for a full and a quick run and what
it needs (the shared test lists, PostgreSQL's binaries); a script that is not listed fails the runner, so
a new benchmark cannot be forgotten. Scripts print figures their own way; the report keeps each script's
output verbatim and lists the lines that carry a figure, with the same-run baseline the script measured
beside it where it measures one (``baseline`` says which line that is). The machine baseline, measured
by the runner before and after the scripts, is the reference for every other figure, and its drift shows
how much the machine's load changed during the run (two cores are shared here: compare ratios, not
absolute figures, across runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BENCHES",
    "HELPERS",
    "Bench",
    "BenchRun",
    "MachineBaseline",
    "figure_lines",
    "render",
    "unlisted_scripts",
]

HERE = Path(__file__).resolve().parent
SHARED_LISTS = HERE.parent.parent / "shared" / "data" / "test-lists"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its arguments (full and quick runs) and what it needs to run at all."""

    name: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] | None = None  # None: not run in a quick run
    needs_shared_lists: bool = False
    needs_postgres: bool = False
    needs_root: bool = False  # network namespaces, raw sockets
    baseline: str = ""  # the script's own same-run baseline, in words (empty: the machine baseline)


BENCHES: tuple[Bench, ...] = (
    Bench(
        "ingest.py",
        (),
        ("--count", "500", "--repeats", "1"),
        baseline="bare Ed25519 verification, same payloads",
    ),
    Bench(
        "ingest_scale.py",
        (),
        ("--count", "2000", "--repeat", "1"),
        needs_postgres=True,
        baseline="one collector process on the same PostgreSQL",
    ),
    Bench(
        "export.py",
        (),
        ("--rows", "5000"),
        baseline="DuckDB COPY of the same summary (CSV, Parquet); a bare json loads/dumps loop (JSON Lines)",
    ),
    Bench(
        "export_soak.py",
        (),
        ("--rows", "5000", "--seconds", "5"),
        baseline="the same ingest with no export running",
    ),
    Bench("import_ooni.py", (), ("--rows", "500"), baseline="a bare json.loads loop over the same lines"),
    Bench("store_pages.py", (), ("--rows", "2000", "20000"), baseline="one bare SELECT of the same rows"),
    Bench(
        "metrics_render.py",
        (),
        ("--repeat", "2"),
        baseline="a bare client_python registry of the same series",
    ),
    Bench(
        "scrape_latency.py",
        (),
        ("--rounds", "1", "--requests", "30"),
        baseline="ingest latency with no scrape, same round",
    ),
    Bench("tls_validate.py", (), ("20",)),
    Bench("anonymise.py", (), ("2",)),
    Bench("lab_startup.py", (), ("2",)),
    Bench("web_measure.py", (), ("60", "8")),
    Bench("geoip.py", (), None),
    Bench(
        "fingerprints.py", (), ("--repeat", "1", "--budget", "0.05"), baseline="a bare loop testing every row"
    ),
    Bench("ingest_bomb.py", (), ("--mib", "64", "--rounds", "1"), baseline="the old reading path, same bomb"),
    Bench("blindrsa.py", (), ("--repeats", "2", "--ops", "10"), baseline="OpenSSL RSA-PSS, Ed25519"),
    Bench(
        "batch_verify.py",
        (),
        ("--repeats", "2", "--measurements", "200", "--issue", "8"),
        baseline="plain Ed25519 per measurement",
    ),
    Bench("upload_transports.py", (), ("20", "16"), baseline="a direct upload"),
    Bench("agent_ui.py", (), ("--requests", "100"), baseline="Python with the agent's CLI loaded"),
    Bench("netns_trace.py", (), None, needs_root=True, baseline="the web measurement of the same URL"),
    Bench("agent_startup.py", (), ("--repeat", "2"), baseline="python -c pass, same machine and run"),
    Bench(
        "time_to_alert.py",
        ("--runs", "1", "--timeout-minutes", "6"),  # about 13 min at most (FULL_TIMEOUT: 15)
        None,
        baseline="the schedule's median minutes to a first sighting, from the daemon's settings",
    ),
    Bench(
        "sighting_latency.py",
        (),
        ("--runs", "1"),
        baseline="the same daemons with sightings off (observation to gateway verdict, time scale 1/60)",
    ),
    Bench("agent_run.py", (), None, needs_shared_lists=True),
    Bench(
        "agent_lab.py",
        ("--repeat", "3"),
        None,
        needs_shared_lists=True,
        baseline="the bare DNS+TCP+TLS+HTTP loop (probe_floor.py), same URLs and lab, before each pass",
    ),
    Bench("probe_floor.py", (), ("--limit", "50", "--repeat", "1"), needs_shared_lists=True),
)
# Scripts under bench/ that are not benchmarks themselves.
HELPERS = frozenset(
    {"agent_imports.py", "alert_system.py", "results.py", "sighting_schedule.py", "__main__.py"}
)

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def unlisted_scripts(folder: Path = HERE) -> list[str]:
    """Scripts under bench/ that are neither a listed benchmark nor a helper."""
    known = {bench.name for bench in BENCHES} | HELPERS
    return sorted(path.name for path in folder.glob("*.py") if path.name not in known)


def figure_lines(output: str, limit: int = 40) -> list[str]:
    """The lines of a script's output that carry a figure (a number), in order, at most ``limit``."""
    lines = [line.rstrip() for line in output.splitlines() if _NUMBER.search(line) and line.strip()]
    return lines[:limit]


@dataclass(frozen=True)
class MachineBaseline:
    """The runner's own reference workloads, measured in the same run as the scripts."""

    python_loops_per_s: float  # a fixed pure-Python loop
    ed25519_verify_per_s: float  # one signature checked again and again

    def ratio_to(self, other: MachineBaseline) -> float:
        """How much slower ``other`` is than this one (1.0: the same), on the Python loop."""
        return self.python_loops_per_s / other.python_loops_per_s


@dataclass(frozen=True)
class BenchRun:
    bench: Bench
    command: str
    seconds: float = 0.0
    returncode: int | None = None  # None: skipped
    skipped: str = ""  # why it did not run
    output: str = ""
    timed_out: bool = False
    figures: list[str] = field(default_factory=list)


def _status(run: BenchRun) -> str:
    if run.skipped:
        return f"skipped: {run.skipped}"
    if run.timed_out:
        return "timed out"
    return "ok" if run.returncode == 0 else f"failed (exit {run.returncode})"


def render(
    *,
    machine: dict[str, str],
    date: str,
    command: str,
    before: MachineBaseline,
    after: MachineBaseline,
    runs: list[BenchRun],
) -> str:
    """bench/RESULTS.md: generated, never edited by hand."""
    out = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on {date}. Do not edit: run the command again.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "## Machine baseline (same run)",
        "",
        "| measured | Python loop (loops/s) | Ed25519 verify (/s) |",
        "|---|---|---|",
        f"| before the scripts | {before.python_loops_per_s:,.0f} | {before.ed25519_verify_per_s:,.0f} |",
        f"| after the scripts | {after.python_loops_per_s:,.0f} | {after.ed25519_verify_per_s:,.0f} |",
        f"| after / before | {after.python_loops_per_s / before.python_loops_per_s:.3f} "
        f"| {after.ed25519_verify_per_s / before.ed25519_verify_per_s:.3f} |",
        "",
        "A ratio far from 1 means the machine's load changed during the run: its figures are less "
        "comparable.",
        "",
        "## Summary",
        "",
        "| script | status | wall time (s) | same-run baseline |",
        "|---|---|---|---|",
    ]
    for run in runs:
        baseline = run.bench.baseline or "the machine baseline above"
        out.append(f"| `{run.bench.name}` | {_status(run)} | {run.seconds:.1f} | {baseline} |")
    for run in runs:
        out += ["", f"## {run.bench.name}", "", f"`{run.command}` — {_status(run)}, {run.seconds:.1f} s", ""]
        if run.skipped:
            continue
        if run.figures:
            out += ["Figures:", "", "```", *run.figures, "```", ""]
        if run.output.strip():
            out += [
                "<details><summary>full output</summary>",
                "",
                "```",
                run.output.rstrip(),
                "```",
                "",
                "</details>",
            ]
    return "\n".join(out) + "\n"

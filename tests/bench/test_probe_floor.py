"""bench/probe_floor.py: the bare DNS+TCP+TLS+HTTP loop the agent's per-URL cost is compared with runs, over
a few URLs of the shared lists in the real lab, and prints its figures (the responses it got and its CPU
and wall per URL). The figures are not judged here (a benchmark's numbers are never asserted); that the loop
really fetched the pages is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTS = REPO.parent / "shared" / "data" / "test-lists"


@pytest.mark.skipif(not (LISTS / "kh.csv").is_file(), reason="the shared test lists are absent")
def test_the_floor_loop_fetches_every_url_through_the_lab_and_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "bench/probe_floor.py", "--limit", "6", "--repeat", "2", "--concurrency", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["urls"] == 6 and figures["passes"] == 2
    # Every URL answered (a redirect counts its own response too), in both passes.
    assert all(responses >= 6 for responses in figures["http_responses_per_pass"])
    for name in ("floor_cpu_ms_per_url", "floor_wall_ms_per_url"):
        spread = figures[name]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]

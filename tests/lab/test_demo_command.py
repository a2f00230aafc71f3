"""The README's first command: `gatewatch-lab demo` runs the whole system on loopback and exits 0 when the
collector's verdicts and its gateway/ISP attribution match the scenario; `--probes-only` skips the
collector and the agents."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gatewatch.lab.scripts import LAB, console_script

pytestmark = pytest.mark.lab

LAB_CLI = [console_script(LAB)]  # the README's command, as installed


def test_system_demo_matches_the_scenario() -> None:
    done = subprocess.run([*LAB_CLI, "demo"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # 15 URLs (hostfilter.lab and snifilter.lab over both schemes) from 3 networks; 9 domains interfered with
    assert "45 measurements stored, 9 domains attributed: all as the scenario expects" in done.stdout
    assert "scope.gateway.same_fingerprint" in done.stdout and "scope.isp.single_network" in done.stdout


def test_probes_only_demo_matches_the_scenario() -> None:
    done = subprocess.run(
        [*LAB_CLI, "demo", "--probes-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "45 measurements, all as expected" in done.stdout
    for domain in ("injected.lab", "sni-reset.lab", "isp-blockpage.lab", "blackhole.lab"):
        assert domain in done.stdout


def test_demo_command_rejects_a_broken_scenario(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[domain]]\nname = 3\n")
    done = subprocess.run(
        [*LAB_CLI, "demo", "-s", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "error:" in done.stderr and "broken.toml" in done.stderr

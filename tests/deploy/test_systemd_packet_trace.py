"""The packet-trace drop-in: systemd loads it over the agent's unit, and it adds CAP_NET_RAW and nothing
more (the sandbox score stays "OK"). Offline: nothing is started."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SYSTEMD = REPO / "deploy" / "systemd"
INSTALLED = "/opt/gatewatch/bin/gatewatch-agent"
MAX_EXPOSURE = 2.0


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    agent = shutil.which("gatewatch-agent") or str(Path(sys.executable).with_name("gatewatch-agent"))
    if not Path(agent).is_file():
        pytest.skip("the gatewatch-agent console script is not installed (pip install -e .)")
    for source in [SYSTEMD / "gatewatch-agent.service", *SYSTEMD.glob("gatewatch-agent.service.d/*.conf")]:
        target = tmp_path / source.relative_to(SYSTEMD)
        target.parent.mkdir(exist_ok=True)
        target.write_text(source.read_text(encoding="utf-8").replace(INSTALLED, agent), encoding="utf-8")
    return tmp_path


def _analyze(unit_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    command = ["systemd-analyze", *args, "gatewatch-agent.service"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=unit_dir, env=env)


def test_the_drop_in_turns_the_step_on_and_grants_only_cap_net_raw(unit_dir: Path) -> None:
    drop_in = (unit_dir / "gatewatch-agent.service.d" / "packet-trace.conf").read_text(encoding="utf-8")
    assert re.findall(r"^(?:Capability\w+|Ambient\w+)=(.*)$", drop_in, flags=re.M) == [
        "CAP_NET_RAW",
        "CAP_NET_RAW",
    ]
    assert "--packet-trace" in drop_in
    verified = _analyze(unit_dir, "verify")
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    scored = _analyze(unit_dir, "security", "--offline=yes", "--no-pager")
    assert scored.returncode == 0, scored.stderr
    # systemd sees the drop-in: the networking capability is now the one flagged ...
    flagged = [line for line in scored.stdout.splitlines() if line.lstrip().startswith("✗")]
    assert any("CAP_NET_" in line for line in flagged), scored.stdout
    # ... and every other capability check still passes, with the sandbox's score still "OK".
    assert not [line for line in flagged if "CapabilityBoundingSet" in line and "CAP_NET_" not in line]
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d)", scored.stdout)
    assert exposure is not None and float(exposure.group(1)) <= MAX_EXPOSURE

"""deploy/pi/: the install script is valid shell and installs the very unit and path the agent's unit
names; the wheel check (run by hand, it needs the network) is valid shell and writes the file the packaging
test reads."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import REPO

SCRIPT = REPO / "deploy" / "pi" / "install.sh"
CHECK_WHEELS = REPO / "deploy" / "pi" / "check_wheels.sh"
UNIT = REPO / "deploy" / "systemd" / "gatewatch-agent.service"


@pytest.mark.parametrize("script", [SCRIPT, CHECK_WHEELS], ids=lambda path: path.name)
def test_the_scripts_parse(script) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_the_wheel_check_writes_what_the_packaging_test_reads() -> None:
    assert "\nOUT=deploy/pi/wheels-checked.txt\n" in CHECK_WHEELS.read_text(encoding="utf-8")
    assert (REPO / "deploy" / "pi" / "wheels-checked.txt").is_file()


def test_the_script_installs_the_shipped_unit_at_the_path_it_names() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    assert 'UNIT_SOURCE="$(cd "$(dirname "$0")/.." && pwd)/systemd/gatewatch-agent.service"' in text
    prefix = re.search(r"^PREFIX=(\S+)$", text, re.MULTILINE)
    assert prefix is not None
    assert f"ExecStart={prefix.group(1)}/bin/gatewatch-agent daemon" in UNIT.read_text(encoding="utf-8")
    assert "StateDirectory=gatewatch-agent" in text and "DynamicUser=yes" in text


def test_help_needs_no_root() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--collector" in done.stdout

"""The collector's and the lab's console scripts on a base (agent-only) install: an install instruction,
not a traceback. The missing packages are hidden from a fresh interpreter by an import hook, so the real
entry points run exactly as on a volunteer's machine that never installed `gatewatch[collector]`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gatewatch.core.extras import COLLECTOR_EXTRA, missing_extra_message

# A meta path finder that refuses the named top-level modules, as if they were not installed.
HIDE = """
import sys
class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hidden())
sys.argv = [{program!r}, "--help"]
from {entry} import main
main()
"""


def _run(program: str, entry: str, hidden: set[str]) -> subprocess.CompletedProcess[str]:
    code = HIDE.format(hidden=hidden, program=program, entry=entry)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


# The lab starts the collector as its console script, so the lab itself imports only aiohttp of the extra.
@pytest.mark.parametrize(
    ("program", "entry", "hidden"),
    [
        ("gatewatch-collector", "gatewatch.collector.entry", "aiohttp"),
        ("gatewatch-collector", "gatewatch.collector.entry", "prometheus_client"),
        ("gatewatch-collector", "gatewatch.collector.entry", "maxminddb"),
        ("gatewatch-lab", "gatewatch.lab.entry", "aiohttp"),
    ],
)
def test_a_missing_collector_dependency_reads_as_an_install_instruction(
    program: str, entry: str, hidden: str
) -> None:
    done = _run(program, entry, {hidden})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == missing_extra_message(program, hidden, COLLECTOR_EXTRA)
    assert "pip install 'gatewatch[collector]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("program", "entry"),
    [("gatewatch-collector", "gatewatch.collector.entry"), ("gatewatch-lab", "gatewatch.lab.entry")],
)
def test_with_the_extra_installed_the_cli_runs(program: str, entry: str) -> None:
    done = _run(program, entry, set())
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_a_missing_gatewatch_module_is_a_bug_and_is_raised() -> None:
    done = _run("gatewatch-collector", "gatewatch.collector.entry", {"gatewatch"})
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr and "gatewatch[collector]" not in done.stderr

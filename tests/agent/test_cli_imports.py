"""``import gatewatch.agent.cli`` (what ``--help``, ``init`` and ``status`` start from) loads typer and the
commands' options only: the models, probes, analysis, signing, the queue and the upload are imported by
the command that uses them (bench/agent_startup.py measures the CPU this saves)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What the command line loaded before it was made lazy, and what no command's options need.
HEAVY = (
    "pydantic",
    "cryptography",
    "sqlite3",
    "asyncio",
    "ssl",
    "h11",
    "dns",
    "rich",
    "gatewatch.core.measurement",
    "gatewatch.core.wire",
    "gatewatch.analysis",
    "gatewatch.probes",
    "gatewatch.agent.display",
    "gatewatch.agent.runner",
    "gatewatch.agent.run_commands",
    "gatewatch.agent.settings",
    "gatewatch.agent.upload",
    "gatewatch.agent.queue",
    "gatewatch.agent.keys",
    "gatewatch.agent.consent",
)

# Typer itself loads these once it builds the commands (pydantic coerces option values; typing_extensions
# brings asyncio, and asyncio ssl) and draws its help (rich): the help's own cost, not the agent's.
TYPER_OWN = frozenset({"pydantic", "asyncio", "ssl", "rich"})


def _loaded_after(code: str) -> list[str]:
    watched = json.dumps(HEAVY)
    probe = f"import json, sys; {code}; print(json.dumps([m for m in {watched} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_command_line_loads_none_of_the_heavy_modules() -> None:
    assert _loaded_after("import gatewatch.agent.cli") == []


@pytest.mark.parametrize("command", ["run", "daemon", "upload", "init", "status", "results", "ui"])
def test_each_command_help_loads_none_of_them(command: str) -> None:
    # typer prints the help and exits (SystemExit 0): the modules loaded by then are what --help costs.
    code = (
        "from gatewatch.agent.cli import app\n"
        "try:\n"
        f"    app([{command!r}, '--help'], prog_name='gatewatch-agent')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code"
    )
    loaded = _loaded_after(f"exec({code!r})")
    assert [m for m in loaded if m not in TYPER_OWN] == []


def test_the_heavy_modules_exist_so_the_check_is_not_vacuous() -> None:
    code = "import gatewatch.agent.run_commands, gatewatch.agent.ui.app"
    assert set(_loaded_after(code)) >= {"pydantic", "gatewatch.core.measurement", "gatewatch.agent.runner"}


# What a pass of `run` needs no part of: the collector's many-measurements analysis (attribution).
COLLECTOR_SIDE = ("gatewatch.analysis.attribution", "gatewatch.analysis.networks", "aiohttp")


def test_a_pass_loads_no_collector_side_analysis() -> None:
    watched = json.dumps(COLLECTOR_SIDE)
    code = (
        "import gatewatch.agent.run_commands, gatewatch.agent.runner, gatewatch.probes.web\n"
        "from gatewatch.analysis import analyse, load_default_fingerprints\n"
        f"print(json.dumps([m for m in {watched} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    # ... and the names stay importable from the package, loaded when asked for.
    code = "from gatewatch.analysis import attribute, StoredRow; import sys; print(attribute.__module__)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "gatewatch.analysis.attribution"

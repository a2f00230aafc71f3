"""bench/agent_imports.py's bytecode_env, with which bench/agent_lab.py starts the agent: the agent loads its
modules' bytecode (as a wheel install has it) instead of compiling them at each start, even where
PYTHONDONTWRITEBYTECODE is set."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ("gatewatch.agent.runner", "gatewatch.probes.web", "gatewatch.core.wire", "gatewatch.analysis.web")


def test_the_agent_runs_with_its_bytecode_compiled_beforehand() -> None:
    script = (
        "import sys, json; sys.path.insert(0, 'bench'); import agent_imports;"
        "print(json.dumps(agent_imports.bytecode_env()))"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    agent_env = json.loads(done.stdout)
    assert "PYTHONDONTWRITEBYTECODE" not in agent_env and "PYTHONPYCACHEPREFIX" not in agent_env
    caches = [
        Path(importlib.util.cache_from_source(importlib.util.find_spec(name).origin)) for name in MODULES
    ]
    stamps = [path.stat().st_mtime_ns for path in caches]  # there before the agent starts
    imports = "; ".join(f"import {name}" for name in MODULES)
    started = subprocess.run(
        [sys.executable, "-P", "-c", imports], env=agent_env, capture_output=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    assert [path.stat().st_mtime_ns for path in caches] == stamps  # read, not compiled again

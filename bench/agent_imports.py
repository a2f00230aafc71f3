"""``gatewatch-agent``, plus one JSON line on stderr at exit: was scapy or aiohttp ever imported in it?

    python -P bench/agent_imports.py run --data-dir ... [any gatewatch-agent arguments]

bench/agent_lab.py runs the agent through this instead of its console script, to learn what the agent's
own process imported (the heavy imports a volunteer's machine pays for). ``-P`` keeps bench/ off
``sys.path``, so these scripts cannot shadow a module the agent imports.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path

EXIT_RECORD = "exit"  # the record's "bench" value, which agent_lab.py looks for
# When set, the agent runs under cProfile timed by CPU (process_time), and the stats go to this file.
PROFILE_ENV = "GATEWATCH_BENCH_PROFILE"
WATCHED = ("scapy", "aiohttp")


AGENT_PACKAGES = ("agent", "core", "probes", "analysis")  # what the agent's process imports of gatewatch


def bytecode_env() -> dict[str, str]:
    """The agent's environment for a bench: its modules compiled now, bytecode written and read beside
    them (``__pycache__``), so that no start of the agent compiles them.

    pip writes a wheel's ``.pyc`` files when it installs the agent, so a volunteer's agent never compiles
    its sources at start; this machine may set PYTHONDONTWRITEBYTECODE, and every start would then compile
    every gatewatch module again (~0.1 s of CPU). A cache folder elsewhere (PYTHONPYCACHEPREFIX) would hold
    none of the standard library's and dependencies' bytecode, which pip and the interpreter keep beside
    their sources: the first start would compile those instead."""
    import gatewatch.agent

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    root = Path(gatewatch.agent.__file__).parent.parent  # where this process's agent comes from
    folders = [str(root / name) for name in AGENT_PACKAGES]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], env=env, check=True)
    return env


def _report() -> None:
    record = {"bench": EXIT_RECORD, **{f"{name}_imported": name in sys.modules for name in WATCHED}}
    sys.stderr.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    # atexit runs after typer's SystemExit, so every import of the whole run is seen. The agent is imported
    # only here, so that agent_lab.py can read EXIT_RECORD without importing it.
    atexit.register(_report)
    if os.environ.get(PROFILE_ENV):
        import cProfile
        import time

        profile = cProfile.Profile(time.process_time)  # CPU, not wall: waiting on the lab is not a cost
        atexit.register(lambda: profile.dump_stats(os.environ[PROFILE_ENV]))
        profile.enable()
    from gatewatch.agent.cli import main

    sys.argv[0] = "gatewatch-agent"  # the name the agent's help and errors give, as its console script
    main()

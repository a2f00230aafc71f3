"""One namespace lab per test module (root only), removed afterwards even when a test fails.

Programs run inside it as a volunteer's would: ``ip netns exec <namespace> python ...``, each with a
timeout, their output read back as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gatewatch.lab.netns.build import missing_requirements

RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def netns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(f"namespace lab: {reason}")
    from gatewatch.lab.netns.lab import NetnsLab

    with NetnsLab.start(tmp_path_factory.mktemp("netns")) as lab:
        yield lab


def python_in(lab: Any, role: str, code: str, *args: str) -> Any:
    """Run ``code`` with this interpreter inside ``role``'s namespace; its last stdout line, as JSON."""
    done = subprocess.run(
        lab.exec_args(role, sys.executable, "-c", code, *args),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

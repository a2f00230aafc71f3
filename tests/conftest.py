"""Fixtures shared by every test folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the clone (CI has it; a user's clone does not)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: these tests read the shared reference data beside the clone")
    return path


def require_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (CI installs it from .ci/run)")
    return found

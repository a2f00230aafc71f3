"""Fixtures of the local page's tests (the server itself is in :mod:`.served`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .served import UiServer


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[UiServer]:
    server = UiServer(tmp_path / "agent").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test, so a fixture can tell that the test failed (screenshots)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report

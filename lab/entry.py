"""The ``gatewatch-lab`` console script: the CLI, or an install instruction when the dependencies of the
collector it runs (``gatewatch[collector]``) are missing from a base (agent-only) install."""

from __future__ import annotations

from gatewatch.core.extras import COLLECTOR_EXTRA, run_or_explain

__all__ = ["main"]


def main() -> None:
    run_or_explain("gatewatch-lab", "gatewatch.lab.cli", COLLECTOR_EXTRA)

"""The ``gatewatch-collector`` console script: the CLI, or an install instruction when the collector's
dependencies (``gatewatch[collector]``) are missing from a base (agent-only) install."""

from __future__ import annotations

from gatewatch.core.extras import COLLECTOR_EXTRA, run_or_explain

__all__ = ["main"]


def main() -> None:
    run_or_explain("gatewatch-collector", "gatewatch.collector.cli", COLLECTOR_EXTRA)

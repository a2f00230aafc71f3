"""How the CLI shows a pass: a rich progress bar on a terminal, one JSON log line per event otherwise
(systemd's journal, cron mail), and the summary table at the end."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewatch.core.vocabulary import NO_VERDICT, NOT_BLOCKED, blocking_label

from .run_records import RunEvent, RunSummary

if TYPE_CHECKING:  # rich is imported where it draws: a pass off a terminal draws nothing until the end
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

__all__ = [
    "JsonLogFormatter",
    "ProgressDisplay",
    "STOP_EXPLANATIONS",
    "attempt_rows",
    "describe_blocking",
    "log_event",
    "plain_summary",
    "results_table",
    "summary_rows",
    "summary_table",
]

log = logging.getLogger("gatewatch.agent")

STOP_EXPLANATIONS = {
    "time_budget": "stopped: the time budget was reached",
    "byte_budget": "stopped: the byte budget was reached",
    "queue_full": "stopped: too many measurements wait for upload (see `status`)",
    "network_changed": "stopped: the network changed; the next pass will re-locate",
    "own_address_unknown": "not measured: the collector could not be reached to learn which address to scrub",
    "interrupted": "interrupted",
}


def attempt_rows(attempts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``status``'s rows for the latest attempts to reach the collector, oldest first: which address, by
    which route, for which call, and what happened (``ok`` or the failure: why the next one was tried)."""
    rows = []
    for index, item in enumerate(attempts):
        outcome = item.get("outcome", "?")
        text = (
            f"{item.get('at')} {item.get('call')} via {item.get('address')} [{item.get('kind')}]: {outcome}"
        )
        rows.append(("collector attempts" if index == 0 else "", text))
    return rows


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        data.update(fields if isinstance(fields, dict) else {"message": record.getMessage()})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


# A verdict's ``blocking`` in the volunteer's words, by its vocabulary label (a layer: "blocked (dns)").
_WORDS = {NOT_BLOCKED: "accessible", NO_VERDICT: "no verdict"}


def describe_blocking(blocking: object) -> str:
    """A verdict's ``blocking`` (``False``, a layer or ``None``) for people: "accessible", "blocked (dns)",
    "no verdict". Presentation only: the value itself is spelled by ``vocabulary.blocking_label``."""
    try:
        label = blocking_label(blocking)
    except ValueError:  # `results` shows the queue's rows as stored: one it cannot name is shown, not a crash
        return f"blocked ({blocking})"
    return _WORDS.get(label, f"blocked ({label})")


def log_event(event: RunEvent) -> None:
    if not log.isEnabledFor(logging.INFO):
        return  # nothing is built for a line nobody writes (a pass at --log-level warning)
    fields: dict[str, Any] = {
        "event": event.kind,
        "done": event.done,
        "total": event.total,
        "blocked": event.blocked,
    }
    if event.result is not None:
        fields.update(
            url=event.result.url,
            verdict=describe_blocking(event.result.blocking),
            layer=event.result.layer,
            fingerprint=event.result.fingerprint,
        )
    if event.message:
        fields["message"] = event.message
    log.info(event.kind, extra={"fields": fields})


class ProgressDisplay:
    """Context manager giving an ``on_event`` callback that drives a progress bar."""

    def __init__(self, console: Console) -> None:
        # Imported here, on a terminal only: a pass under systemd or cron never draws a bar, and the
        # import costs memory on a volunteer's machine (issue 4).
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocked: [red]{task.fields[blocked]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("measuring", total=None, blocked=0)

    def __enter__(self) -> Callable[[RunEvent], None]:
        self.progress.start()
        return self.on_event

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, event: RunEvent) -> None:
        if event.kind == "started":
            self.progress.update(self.task, total=event.total)
        elif event.kind == "measured":
            self.progress.update(self.task, completed=event.done, blocked=event.blocked)
        elif event.kind == "uploading":
            self.progress.update(self.task, description="uploading")
        elif event.kind == "uploaded":
            self.progress.update(self.task, description="done")


def summary_rows(summary: RunSummary, limit: int = 200) -> tuple[list[tuple[str, str, str, str]], int]:
    """(URL, verdict, layer, fingerprint) rows, blocked first (they are what the volunteer ran the agent
    for), then those without a verdict; and how many measured URLs are not shown."""
    ordered = sorted(summary.results, key=lambda r: (not r.blocked, r.blocking is not None))[:limit]
    rows = [(r.url, describe_blocking(r.blocking), r.layer or "", r.fingerprint or "") for r in ordered]
    return rows, max(0, summary.measured - len(rows))


def _title(summary: RunSummary) -> str:
    return f"{summary.measured} of {summary.total} measured, {summary.blocked} blocked"


def _not_shown(hidden: int) -> str:
    return f"{hidden} more not shown (see `gatewatch-agent results`)"


def summary_table(summary: RunSummary, limit: int = 200) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_title(summary))
    for column in ("URL", "verdict", "layer", "fingerprint"):
        table.add_column(column, overflow="fold")
    rows, hidden = summary_rows(summary, limit)
    for url, *rest in rows:
        table.add_row(Text(url), *rest)  # Text, not markup: a test list's "[...]" in a URL is not a style
    if hidden:
        table.caption = _not_shown(hidden)
    return table


def plain_summary(summary: RunSummary, limit: int = 200) -> str:
    """The summary table as plain columns, for a log or a pipe: no terminal, so no need to load rich."""
    rows, hidden = summary_rows(summary, limit)
    header = ("URL", "verdict", "layer", "fingerprint")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [_title(summary)]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in [header, *rows]]  # fmt: skip
    if hidden:
        lines.append(_not_shown(hidden))
    return "\n".join(lines) + "\n"


def results_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Your recent measurements")
    for column in ("time", "URL", "verdict", "layer", "fingerprint", "upload"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["time"],
            Text(row["input"]),
            describe_blocking(row["blocking"]),
            row["layer"] or "",
            row["fingerprint"] or "",
            row["state"] + (f": {row['reason']}" if row.get("reason") else ""),
        )
    return table


def is_terminal() -> bool:
    return sys.stdout.isatty()

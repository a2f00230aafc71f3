"""The page's "run now": one pass at a time on the page's event loop, its live progress, cancel, and the
upload queue's retry. The pass is the agent's own (:func:`..runner.run_pass`), with the settings, test
list and queue the command line uses; nothing here decides what a pass does."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..cli_test_list import NoTestList, load_test_list
from ..consent import load_consent
from ..deliver import upload_waiting
from ..display import STOP_EXPLANATIONS
from ..keys import SigningKeyError, load_key
from ..paths import DataPaths
from ..pseudonym import with_secret
from ..queue import MeasurementQueue
from ..run_records import RunEvent, RunOptions, RunSummary
from ..runner import run_pass
from ..settings import AgentSettings, SettingsError, load_settings
from ..upload import UploadReport

__all__ = ["LabFlags", "Progress", "RunController", "RunRefused"]

log = logging.getLogger(__name__)

Phase = Literal["idle", "preparing", "measuring", "uploading", "finished", "cancelled", "failed"]
_FINISHED: frozenset[Phase] = frozenset({"finished", "cancelled", "failed"})


class RunRefused(Exception):
    """A run or an upload cannot start now; the message says why, in the volunteer's words."""


@dataclass(frozen=True)
class LabFlags:
    """What ``run`` takes on its command line for labs and tests (``ui`` takes the same, once, at start)."""

    resolver: str | None = None
    ca_file: str | None = None
    source_address: str | None = None
    routable: tuple[str, ...] = ()
    input_files: tuple[Path, ...] = ()

    def run_flags(self) -> dict[str, Any]:
        return {
            "resolver": self.resolver,
            "ca_file": self.ca_file,
            "source_address": self.source_address,
            "routable": self.routable,
        }


@dataclass
class Progress:
    """What the page shows of the current (or last) pass."""

    phase: Phase = "idle"
    total: int = 0
    done: int = 0
    blocked: int = 0
    current: str | None = None  # the URL measured last
    message: str | None = None  # why it stopped, what went wrong, what the upload did
    started: float | None = None  # time.monotonic() when measuring began
    max_runtime: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def seconds_left(self, now: float) -> float | None:
        """At the pace so far, capped by what is left of the time budget."""
        if self.phase != "measuring" or self.started is None or not self.done:
            return None
        elapsed = max(now - self.started, 1e-6)
        left = (self.total - self.done) * elapsed / self.done
        if self.max_runtime is not None:
            left = min(left, max(self.max_runtime - elapsed, 0.0))
        return round(left, 1)

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "running": self.phase not in _FINISHED and self.phase != "idle",
            "total": self.total,
            "done": self.done,
            "blocked": self.blocked,
            "current": self.current,
            "message": self.message,
            "seconds_left": self.seconds_left(time.monotonic() if now is None else now),
            "summary": self.summary,
        }


class RunController:
    """At most one pass or upload at a time (they share the queue and the uploader's order)."""

    def __init__(self, paths: DataPaths, flags: LabFlags) -> None:
        self.paths = paths
        self.flags = flags
        self.progress = Progress()
        self.task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def _settings(self) -> AgentSettings:
        try:
            return load_settings(self.paths.settings)
        except SettingsError as exc:
            raise RunRefused(f"agent.toml cannot be used: {exc}") from None

    def start(self) -> None:
        """Start a pass; raises :class:`RunRefused` when one cannot start (the reason for the page)."""
        if self.busy:
            raise RunRefused("a run is already going on")
        record = load_consent(self.paths.consent)
        if record is None or not record.current:
            raise RunRefused("consent is needed first (the risks page)")
        settings = self._settings()
        if not settings.collector_addresses() and not self.flags.input_files:
            raise RunRefused("no collector is set: add one in the settings")
        options = RunOptions.from_settings(settings, **self.flags.run_flags())
        options = with_secret(options, settings.network_pseudonym, self.paths.pseudonym_secret)
        self.progress = Progress(phase="preparing", max_runtime=options.max_runtime)
        self.task = asyncio.create_task(self._run(settings, options), name="gatewatch-ui-run")

    def cancel(self) -> bool:
        if not self.busy:
            return False
        assert self.task is not None
        self.task.cancel()
        return True

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self, settings: AgentSettings, options: RunOptions) -> None:
        progress = self.progress
        try:
            key = load_key(self.paths.key)
            test_list = await load_test_list(
                settings, options, [], list(self.flags.input_files), copy=self.paths.test_list_copy
            )
            with MeasurementQueue(self.paths.queue, settings.queue) as queue:
                summary = await run_pass(test_list.entries, options, queue, key, on_event=self._on_event)
            progress.phase = "finished"
            progress.summary = _summary(summary)
            progress.message = progress.summary["outcome"]
        except asyncio.CancelledError:
            progress.phase = "cancelled"
            progress.message = (
                "Cancelled. What was measured is kept; what waits for upload goes at the next run or retry."
            )
        except (NoTestList, SigningKeyError) as exc:
            progress.phase, progress.message = "failed", str(exc)
        except Exception as exc:  # a bug: the page says so, the log has the trace
            log.exception("the run failed")
            progress.phase, progress.message = "failed", f"the run failed: {type(exc).__name__}"

    def _on_event(self, event: RunEvent) -> None:
        progress = self.progress
        progress.total, progress.done, progress.blocked = event.total, event.done, event.blocked
        if event.kind == "measured":
            if progress.phase != "measuring":
                progress.phase, progress.started = "measuring", time.monotonic()
            if event.result is not None:
                progress.current = event.result.url
        elif event.kind == "stopped" and event.message:
            progress.message = STOP_EXPLANATIONS.get(event.message, event.message)
        elif event.kind == "uploading":
            progress.phase = "uploading"

    async def retry_upload(self) -> UploadReport:
        """Deliver what waits now (the CLI's ``upload``). Refused while a run is going on: it uploads
        at its end anyway."""
        if self.busy:
            raise RunRefused("a run is going on: it uploads what waits when it ends")
        settings = self._settings()
        if not settings.collector_addresses():
            raise RunRefused("no collector is set: add one in the settings")
        if not settings.upload:
            raise RunRefused("uploads are turned off in the settings")
        if not self.paths.queue.exists():
            return UploadReport()
        reports: list[UploadReport] = []

        async def deliver() -> None:
            # As the CLI's `upload`: the settings' addresses and routes (proxy, Tor), upload tokens.
            options = RunOptions.from_settings(settings, **self.flags.run_flags())
            reports.append(await upload_waiting(self.paths, settings, options))

        self.task = asyncio.create_task(deliver(), name="gatewatch-ui-upload")
        try:
            await self.task
        except SigningKeyError as exc:  # the key asks for the upload tokens (or signs, identified)
            raise RunRefused(str(exc)) from None
        return reports[0]


def _summary(summary: RunSummary) -> dict[str, Any]:
    outcome = "The run completed."
    if summary.stop_reason:
        outcome = STOP_EXPLANATIONS.get(summary.stop_reason, summary.stop_reason).capitalize() + "."
    data: dict[str, Any] = {
        "measured": summary.measured,
        "blocked": summary.blocked,
        "no_verdict": summary.no_verdict,
        "started_at": summary.started_at,
        "outcome": outcome,
    }
    if summary.upload is not None:
        data["uploaded"] = summary.upload.delivered
        data["waiting"] = summary.upload.still_pending
        data["quarantined"] = summary.upload.quarantined
        data["upload_error"] = summary.upload.last_error
    return data

"""The commands that measure and deliver: ``run`` (one pass), ``daemon`` (passes on a schedule, for
systemd) and ``upload`` (deliver what waits, without measuring)."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gatewatch.core.vocabulary import WITHHELD_CC

from .cli_common import (
    EXIT_NOT_MEASURED,
    EXIT_STILL_PENDING,
    CaFile,
    DataDir,
    Resolver,
    Routable,
    SourceAddress,
    console,
    fail,
    load_settings_or_fail,
    log,
    setup_logging,
)
from .cli_init import require_consent
from .cli_test_list import NoTestList, load_test_list, report_problems, scheduled_test_list
from .collector_api import ApiFailure, fetch_confirmations, geolocate, make_session
from .daemon import MIN_GAP, ConfirmationBudget, SliceCursor, run_schedule
from .display import STOP_EXPLANATIONS, ProgressDisplay, is_terminal, log_event, plain_summary, summary_table
from .keys import SigningKeyError, load_key
from .netinfo import NetworkView, observe_network
from .paths import DataPaths
from .queue import MeasurementQueue
from .run_records import RunOptions, RunSummary
from .runner import run_pass
from .settings import AgentSettings, SettingsError
from .testlists import TestListEntry
from .upload import Uploader, UploadReport

__all__ = ["daemon", "run", "upload"]

Collectors = Annotated[
    list[str], typer.Option("--collector", help="Collector URL (repeatable; tried in order).")
]
InputFiles = Annotated[list[Path], typer.Option("--input-file", help="A Citizen Lab CSV test list.")]


def _options(settings: AgentSettings, **flags: Any) -> RunOptions:
    return RunOptions(
        collector_urls=tuple(settings.collector_urls),
        control_url=settings.effective_control_url,
        probe_asn=settings.probe_asn,
        probe_cc=settings.probe_cc,
        concurrency=settings.concurrency,
        per_host=settings.per_host_concurrency,
        max_runtime=settings.max_runtime,
        max_bytes=settings.max_bytes,
        upload_batch=settings.upload_batch,
        **flags,
    )


async def _one_pass(
    paths: DataPaths,
    settings: AgentSettings,
    options: RunOptions,
    inputs: list[str],
    files: list[Path],
    *,
    scheduled: bool = False,
    select: Callable[[list[TestListEntry]], list[TestListEntry]] | None = None,
) -> RunSummary:
    key = load_key(paths.key)
    if scheduled:
        test_list = await scheduled_test_list(paths, settings, options, files)
        if select is not None:  # the daemon's slice of the list
            test_list.entries = select(test_list.entries)
    else:
        try:
            test_list = await load_test_list(settings, options, inputs, files, copy=paths.test_list_copy)
        except NoTestList as exc:
            raise fail(str(exc), EXIT_NOT_MEASURED) from None
    report_problems(test_list)
    with MeasurementQueue(paths.queue, settings.queue) as queue:
        if is_terminal():
            with ProgressDisplay(console()) as on_event:
                return await run_pass(test_list.entries, options, queue, key, on_event=on_event)
        return await run_pass(test_list.entries, options, queue, key, on_event=log_event)


def _print_summary(summary: RunSummary) -> None:
    if is_terminal():
        console().print(summary_table(summary))
    else:
        sys.stdout.write(plain_summary(summary))
    if summary.stop_reason:
        typer.secho(STOP_EXPLANATIONS.get(summary.stop_reason, summary.stop_reason), fg="yellow")
        if summary.stop_detail:
            typer.echo(f"  ({summary.stop_detail})")
    if summary.upload is not None:
        u = summary.upload
        line = f"uploaded {u.delivered}, quarantined {u.quarantined}, waiting {u.still_pending}"
        typer.echo(line + (f" (last error: {u.last_error})" if u.last_error else ""))


def run(
    collector: Collectors = [],  # noqa: B006
    control: Annotated[
        str | None, typer.Option("--control", help="Control endpoint (default: the collector).")
    ] = None,
    inputs: Annotated[list[str], typer.Option("--input", help="A URL to measure (repeatable).")] = [],  # noqa: B006
    input_file: InputFiles = [],  # noqa: B006
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
    skip_category: Annotated[list[str], typer.Option("--skip-category", help="Category code to skip.")] = [],  # noqa: B006
    data_dir: DataDir = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, max=256)] = None,
    max_runtime: Annotated[float | None, typer.Option("--max-runtime", help="Seconds.", min=1)] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", help="Download budget.", min=1)] = None,
    no_upload: Annotated[bool, typer.Option("--no-upload", help="Keep results local only.")] = False,
    once: Annotated[bool, typer.Option("--once", help="A single pass (what `run` always does).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure the test list once, then upload (unless --no-upload)."""
    setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    base = load_settings_or_fail(paths)
    try:
        settings = base.with_overrides(
            collector_urls=collector,
            control_url=control,
            concurrency=concurrency,
            max_runtime=max_runtime,
            max_bytes=max_bytes,
            skip_categories=[*base.skip_categories, *skip_category],
        )
    except SettingsError as exc:
        raise fail(str(exc)) from None
    options = _options(
        settings,
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=tuple(routable),
        upload=not no_upload,
    )
    try:
        summary = asyncio.run(_one_pass(paths, settings, options, inputs, input_file))
    except SigningKeyError as exc:
        raise fail(str(exc)) from None
    _print_summary(summary)
    if summary.measured == 0 and summary.stop_reason in ("own_address_unknown", "queue_full"):
        raise typer.Exit(EXIT_NOT_MEASURED)


def daemon(
    data_dir: DataDir = None,
    collector: Annotated[list[str], typer.Option("--collector", help="Collector URL (repeatable).")] = [],  # noqa: B006
    input_file: InputFiles = [],  # noqa: B006
    passes: Annotated[
        int | None, typer.Option("--passes", help="Stop after this many passes.", min=1)
    ] = None,
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
) -> None:
    """Run passes on a schedule (interval plus jitter, from agent.toml); for systemd."""
    setup_logging(True)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    settings = load_settings_or_fail(paths, collector_urls=collector)
    options = _options(
        settings,
        run_type="timed",
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=tuple(routable),
    )
    cursor = SliceCursor(settings.daemon.slices)
    one_pass = functools.partial(_scheduled_pass, paths, settings, options, input_file, cursor)
    confirm = None
    if settings.daemon.confirm_per_hour and settings.collector_urls:
        budget = ConfirmationBudget(per_hour=settings.daemon.confirm_per_hour)
        confirm = functools.partial(_confirm_once, paths, settings, options, budget, {})
    try:
        asyncio.run(_schedule(one_pass, settings, options, passes, confirm))
    except SigningKeyError as exc:
        raise fail(str(exc)) from None


async def _scheduled_pass(
    paths: DataPaths, settings: AgentSettings, options: RunOptions, files: list[Path], cursor: SliceCursor
) -> str | None:
    """One of the daemon's passes (the next slice of the list); its stop reason (None when it completed,
    or failed with a bug)."""

    def select(entries: list[TestListEntry]) -> list[TestListEntry]:
        return cursor.take(entries, lambda entry: entry.url)

    try:
        summary = await _one_pass(paths, settings, options, [], files, scheduled=True, select=select)
    except (SigningKeyError, typer.Exit):
        raise  # the volunteer must act (key, settings): no later pass would do better
    except Exception:  # a bug in one pass must not end the schedule: log it, try again next time
        log.exception("pass failed", extra={"fields": {"event": "pass_failed"}})
        return None
    log.info("pass", extra={"fields": {"event": "pass_done", **summary.as_record()}})
    return summary.stop_reason


async def _confirm_once(
    paths: DataPaths,
    settings: AgentSettings,
    options: RunOptions,
    budget: ConfirmationBudget,
    where: dict[str, str],
) -> int:
    """Measure the collector's confirmation requests for our country at once (within ``budget``), and
    upload at once; how many URLs were measured. ``where`` remembers the country once geolocated."""
    base = settings.collector_urls[0]
    async with make_session(source_address=options.source_address, ca_file=options.ca_file) as session:
        cc = settings.test_list_cc or options.probe_cc or where.get("cc")
        if cc is None:
            located = await geolocate(session, [base])
            if isinstance(located, ApiFailure) or located.probe_cc == WITHHELD_CC:
                return 0
            cc = where["cc"] = located.probe_cc
        urls = await fetch_confirmations(session, base, cc)
    if isinstance(urls, ApiFailure):
        return 0
    chosen = budget.take(urls)
    if chosen:
        summary = await _one_pass(paths, settings, options, chosen, [])
        log.info("confirmation", extra={"fields": {"event": "confirmed", **summary.as_record()}})
    return len(chosen)


async def _schedule(
    one_pass: Callable[[], Awaitable[str | None]],
    settings: AgentSettings,
    options: RunOptions,
    passes: int | None,
    confirm: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The daemon's passes until ``passes`` ran, or until SIGTERM or SIGINT (systemd stopping it)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        if task is not None:
            loop.add_signal_handler(signum, task.cancel)

    def observe() -> NetworkView:
        return observe_network(None, options.source_address)

    try:
        slices = settings.daemon.slices
        await run_schedule(
            one_pass,
            interval=settings.daemon.interval / slices,
            jitter=settings.daemon.jitter / slices,
            observe=observe,
            max_passes=passes,
            min_gap=min(MIN_GAP, settings.daemon.interval / slices),
            confirm=confirm,
        )
    except asyncio.CancelledError:
        log.info("stopping", extra={"fields": {"event": "stopped"}})


async def _flush(
    paths: DataPaths, settings: AgentSettings, source_address: str | None, ca_file: str | None
) -> UploadReport:
    with MeasurementQueue(paths.queue, settings.queue) as queue:
        async with make_session(source_address=source_address, ca_file=ca_file) as session:
            uploader = Uploader(queue, settings.collector_urls, session, batch_size=settings.upload_batch)
            return await uploader.upload_pending()


def upload(
    data_dir: DataDir = None,
    collector: Collectors = [],  # noqa: B006
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Deliver what waits in the queue, without measuring (e.g. once a blocked collector is reachable)."""
    setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    settings = load_settings_or_fail(paths, collector_urls=collector)
    if not settings.collector_urls:
        raise fail("no collector: give --collector or set collector_urls in agent.toml")
    if not paths.queue.exists():
        typer.echo("nothing queued")
        return
    report = asyncio.run(_flush(paths, settings, source_address, ca_file))
    line = f"delivered {report.delivered} ({report.duplicates} already there), "
    line += f"quarantined {report.quarantined}, still pending {report.still_pending}"
    typer.echo(line + (f"; last error: {report.last_error}" if report.last_error else ""))
    if report.still_pending:
        raise typer.Exit(EXIT_STILL_PENDING)

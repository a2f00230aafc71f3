"""What ``run``, ``daemon`` and ``upload`` do once typer has read their options (:mod:`.cli_run` holds the
options and imports this module only when one of them runs: ``gatewatch-agent --help``, ``init`` or
``status`` never load the probes, the analysis, the models or the upload)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer

from gatewatch.core.vocabulary import WITHHELD_CC
from gatewatch.core.wire import Sighting, SightingAnswer

from .cli_common import (
    EXIT_NOT_MEASURED,
    EXIT_STILL_PENDING,
    console,
    fail,
    load_settings_or_fail,
    log,
    setup_logging,
    start_collecting,
)
from .cli_init import require_consent
from .cli_test_list import NoTestList, load_test_list, report_problems, scheduled_test_list
from .collector_api import ApiFailure, fetch_confirmations, make_session, report_sighting, where_am_i
from .daemon import MIN_GAP, ConfirmationBudget, SliceCursor, run_schedule
from .deliver import upload_waiting
from .display import STOP_EXPLANATIONS, ProgressDisplay, is_terminal, log_event, plain_summary, summary_table
from .keys import SigningKeyError, load_key
from .netinfo import NetworkView, observe_network
from .paths import DataPaths
from .pseudonym import with_secret
from .queue import MeasurementQueue
from .run_records import RunOptions, RunSummary
from .runner import run_pass
from .settings import FULL_BODIES_WARNING, AgentSettings, SettingsError
from .sightings import choose_sighting
from .testlists import TestListEntry
from .upload import UploadReport

__all__ = ["daemon", "run", "upload"]  # called by cli_run with the options it read


def _options(settings: AgentSettings, **flags: Any) -> RunOptions:
    return RunOptions.from_settings(settings, **flags)


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
    options = with_secret(options, settings.network_pseudonym, paths.pseudonym_secret)  # off by default
    if options.keep_full_bodies:
        typer.secho(FULL_BODIES_WARNING, fg="yellow", err=True)
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
    *,
    collector: list[str],
    control: str | None,
    inputs: list[str],
    input_file: list[Path],
    resolver: str | None,
    ca_file: str | None,
    source_address: str | None,
    routable: list[str],
    packet_trace: bool,
    trace_control_domain: str | None,
    skip_category: list[str],
    data_dir: Path | None,
    concurrency: int | None,
    max_runtime: float | None,
    max_bytes: int | None,
    no_upload: bool,
    delay_upload: bool,
    upload_delay: str | None,
    proxy: str | None,
    tor: bool,
    once: bool,
    verbose: bool,
) -> None:
    """Measure the test list once, then upload at once (unless --no-upload; --delay-upload waits first,
    as the daemon does)."""
    start_collecting()
    setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    base = load_settings_or_fail(paths)
    try:
        settings = base.with_transport(proxy, tor, upload_delay).with_overrides(
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
        defer_upload=delay_upload and not no_upload,
        packet_trace=packet_trace,
        trace_control_domain=trace_control_domain,
    )
    try:
        summary = asyncio.run(_one_pass(paths, settings, options, inputs, input_file))
        if options.defer_upload:
            summary.upload = asyncio.run(_delayed_flush(paths, settings, options))
    except SigningKeyError as exc:
        raise fail(str(exc)) from None
    _print_summary(summary)
    if summary.measured == 0 and summary.stop_reason in ("own_address_unknown", "queue_full"):
        raise typer.Exit(EXIT_NOT_MEASURED)


def daemon(
    *,
    data_dir: Path | None,
    collector: list[str],
    input_file: list[Path],
    passes: int | None,
    resolver: str | None,
    ca_file: str | None,
    source_address: str | None,
    routable: list[str],
    proxy: str | None,
    tor: bool,
    upload_delay: str | None,
    packet_trace: bool,
    trace_control_domain: str | None,
) -> None:
    """Run passes on a schedule (interval plus jitter, from agent.toml); for systemd. Each pass's upload
    waits a random upload_delay (5 to 60 minutes by default) so that it does not follow the probes."""
    start_collecting()
    setup_logging(True)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    settings = _transport_or_fail(
        load_settings_or_fail(paths, collector_urls=collector), proxy, tor, upload_delay
    )
    options = _options(
        settings,
        run_type="timed",
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=tuple(routable),
        defer_upload=True,
        packet_trace=packet_trace,
        trace_control_domain=trace_control_domain,
    )
    cursor = SliceCursor(settings.daemon.slices)
    where: dict[str, str] = {}  # the country the confirmation polls ask for: found again after each pass
    outbox: list[Sighting] = []  # the last pass's sighting, sent with the next poll
    one_pass = functools.partial(_scheduled_pass, paths, settings, options, input_file, cursor, where, outbox)
    flush = functools.partial(_logged_flush, paths, settings, options)
    confirm = None
    wanted = settings.daemon.confirm_per_hour or settings.daemon.sightings
    if wanted and settings.collector_addresses():
        budget = ConfirmationBudget(per_hour=settings.daemon.confirm_per_hour)
        # confirmations upload at once: their worth is in their speed (and they are few)
        at_once = dataclasses.replace(options, defer_upload=False, confirmation=True)
        confirm = functools.partial(_confirm_once, paths, settings, at_once, budget, where, outbox)
    try:
        asyncio.run(_schedule(one_pass, flush, settings, options, passes, confirm))
    except SigningKeyError as exc:
        raise fail(str(exc)) from None


async def _scheduled_pass(
    paths: DataPaths,
    settings: AgentSettings,
    options: RunOptions,
    files: list[Path],
    cursor: SliceCursor,
    where: dict[str, str],
    outbox: list[Sighting],
) -> str | None:
    """One of the daemon's passes (the next slice of the list); its stop reason (None when it completed,
    or failed with a bug). ``where`` (the confirmation polls' country) is forgotten: the machine may have
    moved, and the next poll asks again. When sightings are on, the pass's sighting (if its results make
    one) waits in ``outbox`` for the next poll."""
    where.clear()

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
    sighting = choose_sighting(summary.results, summary.probe_cc) if settings.daemon.sightings else None
    if sighting is not None:
        outbox[:] = [sighting]  # a newer pass's sighting replaces one not sent yet
    return summary.stop_reason


async def _confirm_once(
    paths: DataPaths,
    settings: AgentSettings,
    options: RunOptions,
    budget: ConfirmationBudget,
    where: dict[str, str],
    outbox: list[Sighting] | None = None,
) -> int:
    """Send the last pass's sighting, if one waits in ``outbox``; then measure the collector's confirmation
    requests for our country at once (within ``budget``), and upload at once; how many URLs were measured.
    ``where`` remembers the country once located.

    The sighting goes with a poll rather than right after the pass: an on-path observer then sees the same
    connection to the collector about once a minute whether or not the pass found anything."""
    addresses = options.collector_addresses
    async with make_session(
        source_address=options.source_address, ca_file=options.ca_file, route=options.route
    ) as session:
        if outbox:
            answer = await report_sighting(session, addresses, outbox.pop())
            _log_sighting(answer)
        if not settings.daemon.confirm_per_hour:
            return 0
        cc = settings.test_list_cc or options.probe_cc or where.get("cc")
        if cc is None:
            located = await where_am_i(session, addresses)
            if isinstance(located, ApiFailure) or located.probe_cc == WITHHELD_CC:
                return 0
            cc = where["cc"] = located.probe_cc
        urls: list[str] | ApiFailure = ApiFailure("no collector configured")
        for address in addresses:  # in turn, by each address's route, until one answers
            urls = await fetch_confirmations(session, address, cc)
            if not isinstance(urls, ApiFailure):
                break
    if isinstance(urls, ApiFailure):
        return 0
    chosen = budget.take(urls)
    if chosen:
        summary = await _one_pass(paths, settings, options, chosen, [])
        log.info("confirmation", extra={"fields": {"event": "confirmed", **summary.as_record()}})
    return len(chosen)


def _log_sighting(answer: SightingAnswer | ApiFailure) -> None:
    """One event per sighting sent: how many URLs the collector listed (never which), or why none."""
    if isinstance(answer, ApiFailure):
        log.info("sighting", extra={"fields": {"event": "sighting_failed", "error": str(answer)}})
    else:
        fields = {"event": "sighting_sent", "listed": len(answer.accepted)}
        log.info("sighting", extra={"fields": fields})


async def _schedule(
    one_pass: Callable[[], Awaitable[str | None]],
    flush: Callable[[], Awaitable[UploadReport]],
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
            upload=flush if settings.collector_addresses() else None,
            upload_delay=settings.upload_delay,
            confirm=confirm,
            confirm_every=settings.daemon.confirm_poll,
        )
    except asyncio.CancelledError:
        log.info("stopping", extra={"fields": {"event": "stopped"}})


def _transport_or_fail(
    settings: AgentSettings, proxy: str | None, tor: bool, upload_delay: str | None = None
) -> AgentSettings:
    try:
        return settings.with_transport(proxy, tor, upload_delay)
    except SettingsError as exc:
        raise fail(str(exc)) from None


async def _logged_flush(paths: DataPaths, settings: AgentSettings, options: RunOptions) -> UploadReport:
    """The daemon's upload, a random delay after its pass, logged as one event."""
    report = await upload_waiting(paths, settings, options, top_up=False)
    log.info("upload", extra={"fields": {"event": "upload_done", **report.as_dict()}})
    return report


async def _delayed_flush(paths: DataPaths, settings: AgentSettings, options: RunOptions) -> UploadReport:
    delay = random.SystemRandom().uniform(*settings.upload_delay)
    typer.echo(f"uploading in {delay:.0f} s (--delay-upload)")
    await asyncio.sleep(delay)
    return await upload_waiting(paths, settings, options)


def upload(
    *, data_dir: Any, collector: Any, ca_file: Any, source_address: Any, proxy: Any, tor: Any, verbose: Any
) -> None:
    """Deliver what waits in the queue, at once, without measuring (e.g. once a blocked collector is
    reachable)."""
    start_collecting()
    setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    require_consent(paths)
    settings = _transport_or_fail(load_settings_or_fail(paths, collector_urls=collector), proxy, tor)
    if not settings.collector_addresses():
        raise fail("no collector: give --collector or set collector_urls in agent.toml")
    if not paths.queue.exists():
        typer.echo("nothing queued")
        return
    options = _options(settings, ca_file=ca_file, source_address=source_address)
    try:
        report = asyncio.run(upload_waiting(paths, settings, options))
    except SigningKeyError as exc:  # the key asks for the upload tokens (or signs, identified)
        raise fail(str(exc)) from None
    line = f"delivered {report.delivered} ({report.duplicates} already there), "
    line += f"quarantined {report.quarantined}, still pending {report.still_pending}"
    typer.echo(line + (f"; last error: {report.last_error}" if report.last_error else ""))
    if report.still_pending:
        raise typer.Exit(EXIT_STILL_PENDING)

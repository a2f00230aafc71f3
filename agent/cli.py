"""``gatewatch-agent``: init (consent and key), run (one pass), daemon, status, results."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .collector_api import ApiFailure, fetch_test_list, geolocate, make_session
from .consent import CONSENT_VERSION, RISK_TEXT, load_consent, record_consent
from .daemon import run_schedule
from .display import (
    STOP_EXPLANATIONS,
    JsonLogFormatter,
    ProgressDisplay,
    is_terminal,
    log_event,
    plain_summary,
    results_table,
    summary_table,
)
from .history import recent_results
from .keys import SigningKeyError, fingerprint, load_key, load_or_create_key
from .netinfo import observe_network
from .paths import DataPaths
from .queue import MeasurementQueue
from .runner import LAST_RUN_KEY, RunEvent, RunOptions, RunSummary, run_pass
from .settings import AgentSettings, SettingsError, load_settings
from .testlists import TestList, entries_from_urls, parse_test_list, read_test_list
from .upload import LAST_UPLOAD_ERROR_KEY, LAST_UPLOAD_KEY, Uploader, UploadReport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="gatewatch volunteer agent: measures which websites are blocked on your network.",
)
log = logging.getLogger("gatewatch.agent")

EXIT_USAGE = 2  # the volunteer must do something first (consent, key, list)
EXIT_NOT_MEASURED = 3
EXIT_STILL_PENDING = 4  # `upload` could not deliver everything (the queue keeps it)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where the key, consent and queue live.")]
Resolver = Annotated[str | None, typer.Option("--resolver", help="DNS resolver IP[:PORT].")]
CaFile = Annotated[str | None, typer.Option("--ca-file", help="Extra CA (PEM), for test labs.")]
SourceAddress = Annotated[str | None, typer.Option("--source-address", help="Lab: bind here.")]
Routable = Annotated[list[str], typer.Option("--routable", help="Lab: CIDR not treated as bogon.")]


@functools.cache
def _console(stderr: bool = False) -> Console:
    """rich's console, made when first needed: a pass under systemd or cron never draws one until its
    summary, and importing rich costs a volunteer's machine about 2 MiB (issue 4)."""
    from rich.console import Console

    # No emoji codes: the agent never writes one, and a URL or an error that happened to contain ":name:"
    # would be changed (and the first such check loads rich's table of emoji names).
    return Console(stderr=stderr, emoji=False)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("gatewatch.agent").setLevel(logging.INFO)


def _write_starter_settings(paths: DataPaths, collectors: list[str]) -> None:
    if paths.settings.exists() or not collectors:
        return
    # JSON strings are valid TOML basic strings, so json.dumps quotes them safely.
    lines = [
        "# gatewatch agent settings (see `gatewatch-agent --help`)",
        f"collector_urls = {json.dumps(collectors)}",
    ]
    paths.settings.write_text("\n".join(lines) + "\n", encoding="utf-8")


@app.command()
def init(
    yes: Annotated[bool, typer.Option("--yes", help="Consent without asking (automation).")] = False,
    collector: Annotated[
        list[str], typer.Option("--collector", help="Collector URL for a new agent.toml.")
    ] = [],  # noqa: B006
    data_dir: DataDir = None,
) -> None:
    """Explain the risks, record your consent, create the data directory and signing key."""
    from rich.panel import Panel

    paths = DataPaths.at(data_dir)
    console = _console()
    console.print(Panel(RISK_TEXT, title="Before you start", expand=False))
    if not yes and not typer.confirm(
        "Do you understand these risks and want to run measurements?", default=False
    ):
        raise _fail("no consent given: nothing was recorded", 1)
    paths.create()
    record = record_consent(paths.consent)
    key = load_or_create_key(paths.key)
    _write_starter_settings(paths, collector)
    console.print(f"Consent recorded ({record.given_at}, text version {record.version}).")
    console.print(f"Data directory: {paths.root}")
    console.print(f"Signing key fingerprint: [bold]{fingerprint(key)}[/bold]")


def _require_consent(paths: DataPaths) -> None:
    record = load_consent(paths.consent)
    if record is None:
        raise _fail("no consent recorded: run `gatewatch-agent init` first (it explains the risks)")
    if not record.current:
        raise _fail(f"the risk text changed (version {CONSENT_VERSION}): run `gatewatch-agent init` again")


def _load(paths: DataPaths) -> AgentSettings:
    try:
        return load_settings(paths.settings)
    except SettingsError as exc:
        raise _fail(str(exc)) from None


class _NoTestList(Exception):
    """The collector's test list could not be fetched (the reason is the message)."""


def _keep_copy(path: Path, text: str) -> None:
    """Save the fetched list for later passes (atomically: a crash leaves the old copy or the new one)."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:  # a full disk must not stop this pass: it only loses the fallback
        log.warning("cannot keep a copy of the test list: %s", exc.strerror or exc)


async def _test_list(
    settings: AgentSettings,
    options: RunOptions,
    inputs: list[str],
    files: list[Path],
    copy: Path | None = None,
) -> TestList:
    """--input/--input-file if given, else the collector's list for our country (saved to ``copy``
    when given). Raises :class:`_NoTestList` when that list cannot be fetched."""
    include, exclude = settings.include_categories, settings.skip_categories
    seen: set[str] = set()
    merged = entries_from_urls(inputs, seen=seen)
    for path in files:
        part = read_test_list(path, include=include, exclude=exclude, seen=seen)
        merged.entries += part.entries
        merged.problems += part.problems
        merged.duplicates += part.duplicates
        merged.filtered_out += part.filtered_out
    if inputs or files:
        return merged
    bases = list(options.collector_urls)
    if not bases:
        raise _fail("nothing to measure: give --input, --input-file or a collector to fetch the list from")
    async with make_session(source_address=options.source_address, ca_file=options.ca_file) as session:
        cc = settings.test_list_cc or options.probe_cc
        if cc is None:
            found = await geolocate(session, bases)
            cc = "ZZ" if isinstance(found, ApiFailure) else found.probe_cc
        text = await fetch_test_list(session, bases, cc)
    if isinstance(text, ApiFailure):
        raise _NoTestList(f"cannot fetch the test list from the collector: {text}")
    if copy is not None:
        _keep_copy(copy, text)
    return parse_test_list(text, include=include, exclude=exclude)


async def _scheduled_test_list(
    paths: DataPaths, settings: AgentSettings, options: RunOptions, files: list[Path]
) -> TestList:
    """The daemon's list: fetched, else the last one fetched, else none (the pass then only uploads
    what waits): one unreachable collector must not end the daemon or its schedule."""
    try:
        return await _test_list(settings, options, [], files, copy=paths.test_list_copy)
    except _NoTestList as exc:
        fallback = read_test_list(
            paths.test_list_copy, include=settings.include_categories, exclude=settings.skip_categories
        )
        using = "the last list fetched" if fallback.entries else "no list: measuring nothing this pass"
        log.warning("%s; using %s", exc, using, extra={"fields": {"event": "test_list_unavailable"}})
        return fallback if fallback.entries else TestList()


def _report_problems(test_list: TestList) -> None:
    if test_list.problems:
        typer.secho(
            f"{len(test_list.problems)} test-list rows skipped (first ones below)", fg="yellow", err=True
        )
        for problem in test_list.problems[:5]:
            typer.echo(f"  line {problem.line}: {problem.reason} {problem.text}", err=True)


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
) -> RunSummary:
    key = load_key(paths.key)
    if scheduled:
        test_list = await _scheduled_test_list(paths, settings, options, files)
    else:
        try:
            test_list = await _test_list(settings, options, inputs, files, copy=paths.test_list_copy)
        except _NoTestList as exc:
            raise _fail(str(exc), EXIT_NOT_MEASURED) from None
    _report_problems(test_list)
    with MeasurementQueue(paths.queue, settings.queue) as queue:
        if is_terminal():
            with ProgressDisplay(_console()) as on_event:
                return await run_pass(test_list.entries, options, queue, key, on_event=on_event)
        return await run_pass(test_list.entries, options, queue, key, on_event=_log_measured)


def _log_measured(event: RunEvent) -> None:
    log_event(event)


def _print_summary(summary: RunSummary) -> None:
    if is_terminal():
        _console().print(summary_table(summary))
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


@app.command()
def run(
    collector: Annotated[
        list[str], typer.Option("--collector", help="Collector URL (repeatable; tried in order).")
    ] = [],  # noqa: B006
    control: Annotated[
        str | None, typer.Option("--control", help="Control endpoint (default: the collector).")
    ] = None,
    inputs: Annotated[list[str], typer.Option("--input", help="A URL to measure (repeatable).")] = [],  # noqa: B006
    input_file: Annotated[list[Path], typer.Option("--input-file", help="A Citizen Lab CSV test list.")] = [],  # noqa: B006
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
    _setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    _require_consent(paths)
    base = _load(paths)
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
        raise _fail(str(exc)) from None
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
        raise _fail(str(exc)) from None
    _print_summary(summary)
    if summary.measured == 0 and summary.stop_reason in ("own_address_unknown", "queue_full"):
        raise typer.Exit(EXIT_NOT_MEASURED)


@app.command()
def daemon(
    data_dir: DataDir = None,
    collector: Annotated[list[str], typer.Option("--collector", help="Collector URL (repeatable).")] = [],  # noqa: B006
    input_file: Annotated[list[Path], typer.Option("--input-file", help="A Citizen Lab CSV test list.")] = [],  # noqa: B006
    passes: Annotated[
        int | None, typer.Option("--passes", help="Stop after this many passes.", min=1)
    ] = None,
    resolver: Resolver = None,
    ca_file: CaFile = None,
    source_address: SourceAddress = None,
    routable: Routable = [],  # noqa: B006
) -> None:
    """Run passes on a schedule (interval plus jitter, from agent.toml); for systemd."""
    _setup_logging(True)
    paths = DataPaths.at(data_dir)
    _require_consent(paths)
    try:
        settings = _load(paths).with_overrides(collector_urls=collector)
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    options = _options(
        settings,
        run_type="timed",
        resolver=resolver,
        ca_file=ca_file,
        source_address=source_address,
        routable=tuple(routable),
    )

    async def one_pass() -> str | None:
        try:
            summary = await _one_pass(paths, settings, options, [], input_file, scheduled=True)
        except (SigningKeyError, typer.Exit):
            raise  # the volunteer must act (key, settings): no later pass would do better
        except Exception:  # a bug in one pass must not end the schedule: log it, try again next time
            log.exception("pass failed", extra={"fields": {"event": "pass_failed"}})
            return None
        log.info("pass", extra={"fields": {"event": "pass_done", **summary.as_record()}})
        return summary.stop_reason

    def observe() -> Any:
        return observe_network(None, options.source_address)

    async def main_loop() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            if task is not None:
                loop.add_signal_handler(signum, task.cancel)
        try:
            await run_schedule(
                one_pass,
                interval=settings.daemon.interval,
                jitter=settings.daemon.jitter,
                observe=observe,
                max_passes=passes,
            )
        except asyncio.CancelledError:
            log.info("stopping", extra={"fields": {"event": "stopped"}})

    try:
        asyncio.run(main_loop())
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None


async def _flush(
    paths: DataPaths, settings: AgentSettings, source_address: str | None, ca_file: str | None
) -> UploadReport:
    with MeasurementQueue(paths.queue, settings.queue) as queue:
        async with make_session(source_address=source_address, ca_file=ca_file) as session:
            uploader = Uploader(queue, settings.collector_urls, session, batch_size=settings.upload_batch)
            return await uploader.upload_pending()


@app.command()
def upload(
    data_dir: DataDir = None,
    collector: Annotated[
        list[str], typer.Option("--collector", help="Collector URL (repeatable; tried in order).")
    ] = [],  # noqa: B006
    ca_file: Annotated[str | None, typer.Option("--ca-file", help="Extra CA (PEM), for test labs.")] = None,
    source_address: Annotated[str | None, typer.Option("--source-address", help="Lab: bind here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Deliver what waits in the queue, without measuring (e.g. once a blocked collector is reachable)."""
    _setup_logging(verbose)
    paths = DataPaths.at(data_dir)
    _require_consent(paths)
    try:
        settings = _load(paths).with_overrides(collector_urls=collector)
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    if not settings.collector_urls:
        raise _fail("no collector: give --collector or set collector_urls in agent.toml")
    if not paths.queue.exists():
        typer.echo("nothing queued")
        return
    report = asyncio.run(_flush(paths, settings, source_address, ca_file))
    line = f"delivered {report.delivered} ({report.duplicates} already there), "
    line += f"quarantined {report.quarantined}, still pending {report.still_pending}"
    typer.echo(line + (f"; last error: {report.last_error}" if report.last_error else ""))
    if report.still_pending:
        raise typer.Exit(EXIT_STILL_PENDING)


@app.command()
def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Consent, last run, what waits for upload and why, quarantined measurements, key fingerprint."""
    paths = DataPaths.at(data_dir)
    record = load_consent(paths.consent)
    info: dict[str, Any] = {
        "data_dir": str(paths.root),
        "consent": None
        if record is None
        else {"version": record.version, "given_at": record.given_at, "current": record.current},  # fmt: skip
        "key_fingerprint": None,
    }
    try:
        info["key_fingerprint"] = fingerprint(load_key(paths.key))
    except SigningKeyError:
        pass
    if paths.queue.exists():
        with MeasurementQueue(paths.queue) as queue:
            info["queue"] = queue.counts()
            info["queue_bytes"] = queue.size_bytes()
            info["queue_full"] = info["queue"]["pending"] >= queue.limits.max_unsent
            info["pending_reasons"] = queue.pending_reasons()
            info["quarantined"] = [
                {"measurement_uid": r.measurement_uid, "reason": r.reason, "at": r.updated_at}
                for r in queue.quarantined(20)
            ]
            info["last_run"] = queue.get_meta(LAST_RUN_KEY)
            info["last_upload"] = queue.get_meta(LAST_UPLOAD_KEY)
            info["last_upload_error"] = queue.get_meta(LAST_UPLOAD_ERROR_KEY)
    if as_json:
        _console().print_json(json.dumps(info))
        return
    _print_status(info)


def _print_status(info: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=False, title="gatewatch agent")
    consent = info["consent"]
    table.add_row("data directory", info["data_dir"])
    table.add_row(
        "consent",
        "not given: run `gatewatch-agent init`"
        if consent is None
        else f"given {consent['given_at']}" + ("" if consent["current"] else " (outdated: run init again)"),
    )
    table.add_row("key fingerprint", info["key_fingerprint"] or "no key: run `gatewatch-agent init`")
    last_run = info.get("last_run")
    if last_run:
        stop = STOP_EXPLANATIONS.get(last_run.get("stop_reason") or "", "completed")
        table.add_row(
            "last run",
            f"{last_run.get('started_at')}: {last_run.get('measured')}/{last_run.get('total')} measured, "
            f"{last_run.get('blocked')} blocked; {stop}",
        )
    else:
        table.add_row("last run", "never")
    queue = info.get("queue")
    if queue:
        table.add_row(
            "queue",
            f"{queue['pending']} waiting, {queue['sent']} sent, {queue['quarantined']} quarantined, "
            f"{queue['local']} local only",
        )
        if info.get("queue_full"):
            table.add_row(
                "warning", "[red]the queue is full: no new measurements until some are uploaded[/red]"
            )
        for reason, count in info.get("pending_reasons", {}).items():
            table.add_row("  waiting because", f"{reason} ({count})")
    upload = info.get("last_upload")
    if upload:
        table.add_row("last upload", f"{upload['at']}: {upload['accepted'] + upload['duplicates']} delivered")
    error = info.get("last_upload_error")
    if error:
        table.add_row("last upload error", f"{error['at']}: {error['error']}")
    for item in info.get("quarantined", []):
        table.add_row("quarantined", f"{item['measurement_uid']}: {item['reason']}")
    _console().print(table)


@app.command()
def results(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Your own recent results (newest first)."""
    paths = DataPaths.at(data_dir)
    if not paths.queue.exists():
        rows: list[dict[str, Any]] = []
    else:
        with MeasurementQueue(paths.queue) as queue:
            rows = recent_results(queue, limit)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        _console().print(results_table(rows))


def main() -> None:
    app()

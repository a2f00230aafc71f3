"""The commands that report: ``status`` (consent, last run, what waits and why, key) and ``results`` (the
volunteer's own recent measurements)."""

# Annotations stay objects, not text (no __future__ import): see cli_common.

import json
import sys
from typing import Annotated, Any

import typer

from .cli_common import DataDir, console, start_collecting
from .paths import DataPaths

__all__ = ["results", "status"]


def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Consent, last run, what waits for upload and why, how each collector address answered the last
    attempts (direct, proxy, Tor, onion, fronted), quarantined measurements, key fingerprint."""
    # Imported here, not with the command line: see cli_common.
    from .addresses import ATTEMPTS_KEY
    from .consent import load_consent
    from .keys import SigningKeyError, fingerprint, load_key
    from .queue import MeasurementQueue
    from .run_records import LAST_RUN_KEY
    from .settings import SettingsError, load_settings
    from .tokens import TokenWallet
    from .upload import LAST_UPLOAD_ERROR_KEY, LAST_UPLOAD_KEY

    start_collecting()
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
    try:
        addresses = load_settings(paths.settings).collector_addresses()
        info["collector_addresses"] = [{"address": a.label, "kind": a.kind} for a in addresses]
    except SettingsError as exc:
        info["settings_error"] = str(exc)
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
            info["collector_attempts"] = (queue.get_meta(ATTEMPTS_KEY) or {}).get("attempts", [])
            info["tokens"] = TokenWallet(queue).usable()  # unspent upload tokens (issue 12)
    if as_json:
        console().print_json(json.dumps(info))
        return
    _print_status(info)


def _print_status(info: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from .display import STOP_EXPLANATIONS, attempt_rows

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
    if info.get("settings_error"):
        table.add_row("settings", Text(f"unusable: {info['settings_error']}", style="red"))
    for index, address in enumerate(info.get("collector_addresses", [])):
        table.add_row(
            "collector addresses" if index == 0 else "", Text(f"{address['address']} ({address['kind']})")
        )
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
        table.add_row("upload tokens", f"{info.get('tokens', 0)} unspent (one per upload batch)")
    upload = info.get("last_upload")
    if upload:
        table.add_row("last upload", f"{upload['at']}: {upload['accepted'] + upload['duplicates']} delivered")
    error = info.get("last_upload_error")
    if error:
        table.add_row("last upload error", f"{error['at']}: {error['error']}")
    for name, text in attempt_rows(info.get("collector_attempts", [])):
        table.add_row(name, Text(text))  # Text, not markup: an address or a failure is not a style
    for item in info.get("quarantined", []):
        table.add_row("quarantined", f"{item['measurement_uid']}: {item['reason']}")
    console().print(table)


def results(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Your own recent results (newest first)."""
    from .display import results_table
    from .history import recent_results
    from .queue import MeasurementQueue

    start_collecting()
    paths = DataPaths.at(data_dir)
    if not paths.queue.exists():
        rows: list[dict[str, Any]] = []
    else:
        with MeasurementQueue(paths.queue) as queue:
            rows = recent_results(queue, limit)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        console().print(results_table(rows))

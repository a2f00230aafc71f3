"""The test list a pass measures: the volunteer's own URLs and files, else the collector's list for the
country (a copy kept, for the daemon's passes when the collector cannot be reached)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from gatewatch.core.vocabulary import WITHHELD_CC

from .cli_common import fail, log
from .collector_api import ApiFailure, fetch_test_list, make_session, where_am_i
from .paths import DataPaths
from .run_records import RunOptions
from .settings import AgentSettings
from .testlists import TestList, entries_from_urls, parse_test_list, read_test_list

__all__ = ["LIST_REUSE", "NoTestList", "load_test_list", "report_problems", "scheduled_test_list"]

LIST_REUSE = 3600.0  # the daemon fetches the collector's list at most once an hour (seconds)


class NoTestList(Exception):
    """The collector's test list could not be fetched (the reason is the message)."""


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    return 0 <= age < seconds  # a copy from the future (the clock was set back) is fetched again


def _keep_copy(path: Path, text: str) -> None:
    """Save the fetched list for later passes (atomically: a crash leaves the old copy or the new one)."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:  # a full disk must not stop this pass: it only loses the fallback
        log.warning("cannot keep a copy of the test list: %s", exc.strerror or exc)


async def load_test_list(
    settings: AgentSettings,
    options: RunOptions,
    inputs: list[str],
    files: list[Path],
    copy: Path | None = None,
) -> TestList:
    """--input/--input-file if given, else the collector's list for our country (saved to ``copy``
    when given). Raises :class:`NoTestList` when that list cannot be fetched."""
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
    bases = options.collector_addresses  # by their routes: a proxy, Tor, a front
    if not bases:
        raise fail("nothing to measure: give --input, --input-file or a collector to fetch the list from")
    session = make_session(
        source_address=options.source_address, ca_file=options.ca_file, route=options.route
    )
    async with session:
        cc = settings.test_list_cc or options.probe_cc
        if cc is None:
            found = await where_am_i(session, bases)  # through Tor it is the exit's country: withheld
            cc = WITHHELD_CC if isinstance(found, ApiFailure) else found.probe_cc
        text = await fetch_test_list(session, bases, cc)
    if isinstance(text, ApiFailure):
        raise NoTestList(f"cannot fetch the test list from the collector: {text}")
    if copy is not None:
        _keep_copy(copy, text)
    return parse_test_list(text, include=include, exclude=exclude)


async def scheduled_test_list(
    paths: DataPaths,
    settings: AgentSettings,
    options: RunOptions,
    files: list[Path],
    reuse_for: float = LIST_REUSE,
) -> TestList:
    """The daemon's list: the copy fetched less than ``reuse_for`` seconds ago, else fetched, else the last
    one fetched, else none (the pass then only uploads what waits): one unreachable collector must not end
    the daemon or its schedule.

    A pass is one slice of the list, but each fetch brings all of it (about 180 kB for a country's list
    and the global one): fetched for every slice, the list would cost a volunteer's line more than the
    slices' measurements save. Fetched at most once in ``reuse_for``, a changed list (or a new country's,
    after the machine moved) is measured within that time."""
    if not files and _younger_than(paths.test_list_copy, reuse_for):
        kept = read_test_list(
            paths.test_list_copy, include=settings.include_categories, exclude=settings.skip_categories
        )
        if kept.entries:
            return kept
    try:
        return await load_test_list(settings, options, [], files, copy=paths.test_list_copy)
    except NoTestList as exc:
        fallback = read_test_list(
            paths.test_list_copy, include=settings.include_categories, exclude=settings.skip_categories
        )
        using = "the last list fetched" if fallback.entries else "no list: measuring nothing this pass"
        log.warning("%s; using %s", exc, using, extra={"fields": {"event": "test_list_unavailable"}})
        return fallback if fallback.entries else TestList()


def report_problems(test_list: TestList) -> None:
    if test_list.problems:
        typer.secho(
            f"{len(test_list.problems)} test-list rows skipped (first ones below)", fg="yellow", err=True
        )
        for problem in test_list.problems[:5]:
            typer.echo(f"  line {problem.line}: {problem.reason} {problem.text}", err=True)

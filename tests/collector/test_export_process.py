"""The JSON Lines and OONI exports made by a child process (export_process.py): the same bytes as in
process, the filter carried whole, a store that cannot open is a StoreError before any byte, a child that
dies mid-way fails the download, and a child whose client went away is ended."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewatch.collector.export_process import filter_from_json, filter_to_json, process_export
from gatewatch.collector.exports import export
from gatewatch.collector.store import MeasurementFilter, StoreError, open_store

from .test_export_rows import varied_rows
from .test_export_stream import ENVELOPE
from .test_exports import START, collect, make_row


def export_children() -> list[int]:
    """This process's children running the export module (from /proc: no helper package needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"gatewatch.collector.export_process" in cmdline:
            found.append(int(entry.name))
    return found


def test_the_filter_travels_whole() -> None:
    full = MeasurementFilter(
        probe_cc="KH",
        probe_asn="AS64501",
        test_name="web",
        input='https://example.org/,"x"\n',
        domain="example.org",
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=datetime(2026, 12, 1, 12, 30, 15, 123, tzinfo=UTC),
        anomaly=False,
        blocking="dns",
    )
    for f in (full, MeasurementFilter()):
        assert filter_from_json(filter_to_json(f)) == f


@pytest.mark.parametrize("fmt", ["jsonl", "ooni"])
async def test_same_bytes_as_in_process(store_url: str, fmt: str) -> None:
    store = await open_store(store_url)
    rows = varied_rows()
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    try:
        for f in (MeasurementFilter(), MeasurementFilter(probe_cc="MM", since=START + timedelta(minutes=3))):
            expected = await collect(export(fmt, store.iterate(f)))
            assert expected
            assert await collect(process_export(store_url, fmt, f, chunk_size=4096)) == expected
    finally:
        await store.close()


async def test_a_store_that_cannot_open_is_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "gatewatch.db"
    with pytest.raises(StoreError, match="unable to open"):
        await collect(process_export(f"sqlite:///{missing}", "jsonl", MeasurementFilter()))
    assert export_children() == []


async def test_a_child_that_dies_fails_the_download(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gatewatch.db'}"
    store = await open_store(url)
    rows = [make_row(i, input=f"https://example.org/{i}/" + "p" * 2000) for i in range(3000)]
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    await store.close()
    stream = process_export(url, "jsonl", MeasurementFilter(), chunk_size=1024)
    assert await anext(stream)
    (child,) = export_children()
    os.kill(child, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="export process failed"):
        async for _ in stream:
            pass


async def test_an_abandoned_export_ends_its_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gatewatch.db'}"
    store = await open_store(url)
    rows = [make_row(i, input=f"https://example.org/{i}/" + "p" * 2000) for i in range(3000)]
    await store.insert_many(rows, [ENVELOPE] * len(rows))
    await store.close()
    stream = process_export(url, "ooni", MeasurementFilter(), chunk_size=1024)
    assert await anext(stream)
    assert len(export_children()) == 1
    await stream.aclose()
    assert export_children() == []


async def test_the_store_url_is_not_on_the_childs_command_line() -> None:
    # A PostgreSQL URL may carry a password; every local user can read a command line (ps, /proc/*/cmdline).
    # Nothing listens on loopback port 1: the child starts, is looked at, then fails to connect.
    url = "postgresql://gatewatch:s3cret-password@127.0.0.1:1/gatewatch"
    stream = process_export(url, "jsonl", MeasurementFilter(), chunk_size=1024)
    task = asyncio.ensure_future(anext(stream, None))
    try:
        for _ in range(2000):  # 10 s at most
            if children := export_children():
                break
            await asyncio.sleep(0.005)
        cmdline = (Path("/proc") / str(children[0]) / "cmdline").read_bytes()
        assert b"gatewatch.collector.export_process" in cmdline
        assert b"s3cret" not in cmdline and b"postgresql" not in cmdline and b"jsonl" not in cmdline
        with pytest.raises(StoreError):  # and the job did reach it: it tried that store
            await task
    finally:
        task.cancel()
        await stream.aclose()

"""An API export made by a child process, so that it takes neither the event loop nor the GIL from ingest.

A worker thread keeps the event loop free, but not the GIL: on a thread of the serving process a JSON
Lines export raised ingest p99 about 6.5x and a CSV one about 5x (bench/export_soak.py; a CSV row still
costs Python a join and, token-signed, a base64). A child process
(``python -m gatewatch.collector.export_process``, given the store URL, format and filter as one JSON
document on its stdin: a PostgreSQL URL may hold a password, and a command line is readable by every local
user in ``ps``) opens the store itself, runs the same
:func:`.export_stream.stream_export` and writes the bytes to its stdout; the serving process only relays
them. Its memory is bounded as in the thread (a slow client fills the pipe and the child waits). The child
runs at a lower priority (``nice`` 10), so that on a busy machine the export waits rather than ingest.

A failure in the child (the store unreachable, a bug) ends it with a message on stderr and a non-zero
status: before any byte that is an answer of 503 (``store_unavailable``) or 500, after them a truncated
download, as for the in-process export. The caller checks that its own store answers before starting one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final

from .export_stream import stream_export
from .exports import CHUNK_SIZE
from .store import open_store
from .store.base import MeasurementFilter, StoreError

__all__ = ["filter_from_json", "filter_to_json", "job_to_json", "process_export"]

_NICENESS: Final = 10  # the child's scheduling priority, below the collector's
_STORE_FAILED: Final = 3  # the child's exit status when its store failed (the others: a bug)
_TIME_FIELDS: Final = ("since", "until")


def filter_to_json(f: MeasurementFilter) -> str:
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(f).items()})


def filter_from_json(text: str) -> MeasurementFilter:
    values: dict[str, Any] = json.loads(text)
    for name in _TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return MeasurementFilter(**values)


async def process_export(
    db: str, fmt: str, f: MeasurementFilter, *, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The export of ``fmt`` made by a child process over the store at ``db``."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdin.write(job_to_json(db, fmt, f).encode())
    child.stdin.close()  # a few hundred bytes: within the pipe's buffer, no wait needed
    errors = asyncio.ensure_future(child.stderr.read())  # read as it comes: a full pipe would block it
    try:
        while chunk := await child.stdout.read(chunk_size):
            yield chunk
        status = await child.wait()
        if status != 0:
            message = (await errors).decode("utf-8", "replace").strip()[-500:]
            if status == _STORE_FAILED:
                raise StoreError(message)
            raise RuntimeError(f"the export process failed ({status}): {message}")
    finally:
        # Also when the client went away or the handler is cancelled (the server stopping): the child is
        # ended and reaped, and its pipes read to their end so that asyncio closes its transport.
        reaping = asyncio.ensure_future(_reap(child, errors))
        _REAPING.add(reaping)
        reaping.add_done_callback(_REAPING.discard)
        await asyncio.shield(reaping)


_REAPING: set[asyncio.Future[None]] = set()  # kept referenced until done


async def _reap(child: asyncio.subprocess.Process, errors: asyncio.Future[bytes]) -> None:
    if child.returncode is None:
        child.kill()
    assert child.stdout is not None
    await child.stdout.read()  # what is left in the pipe (at most its buffer): the child is gone
    await errors
    await child.wait()


async def _export_to_stdout(db: str, fmt: str, f: MeasurementFilter) -> None:
    store = await open_store(db)
    try:
        out = sys.stdout.buffer
        async for chunk in stream_export(store, fmt, f):
            out.write(chunk)
        out.flush()
    finally:
        await store.close()


def job_to_json(db: str, fmt: str, f: MeasurementFilter) -> str:
    """What the child is asked (on its stdin, never its command line)."""
    return json.dumps({"db": db, "format": fmt, "filter": filter_to_json(f)})


def main(job: str | None = None) -> int:
    values = json.loads(sys.stdin.read() if job is None else job)
    db, fmt, filter_json = values["db"], values["format"], values["filter"]
    # Behind the serving process on a busy machine: an export may take longer, ingest should not.
    os.nice(_NICENESS)
    try:
        asyncio.run(_export_to_stdout(db, fmt, filter_from_json(filter_json)))
    except StoreError as exc:
        print(f"store unavailable: {exc}", file=sys.stderr)
        return _STORE_FAILED
    except BrokenPipeError:  # the collector stopped reading (its client went away)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

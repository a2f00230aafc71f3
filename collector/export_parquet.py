"""Parquet written by DuckDB while the CSV summary is still being produced, through a named pipe.

:func:`.exports.convert_to_parquet` reads a finished staging file: the export then takes the time to write
the CSV plus the time DuckDB takes to convert it, one after the other, and the disk holds the whole
summary once. Here DuckDB reads the CSV from a FIFO on its own thread (it releases the GIL) while the
caller writes records into it, so the two overlap on two cores and no staging file is written. DuckDB
reads a pipe exactly as it reads the file (the same ``read_csv`` statement, ``auto_detect`` off): the
Parquet file is byte for byte the one the staged conversion writes (tests/collector/test_export_parquet.py).

Failures on either side end the other: the writer gets ``BrokenPipeError`` when DuckDB stops reading, and
DuckDB sees the end of its input when the writer closes (a half-written export is deleted by the caller).
Waiting for DuckDB to open the pipe is bounded: a conversion that fails before it reads raises its error.

A partitioned export (export_cmd.py) stages many small CSV files, one per day and country, and converts
each once it is complete: :class:`ConversionQueue` converts them on one DuckDB thread, in one connection,
while the caller goes on writing the next days' files, instead of all of them one after the other at the end.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final

from .exports import convert_all_to_parquet, convert_to_parquet

__all__ = ["ConversionQueue", "parquet_pipe", "pipes_supported"]

_OPEN_TIMEOUT: Final = 30.0  # seconds DuckDB may take to open its input (it takes milliseconds)
_JOIN_TIMEOUT: Final = 600.0  # seconds DuckDB may take to finish after its input ends


def pipes_supported() -> bool:
    """Whether this platform has named pipes (POSIX); elsewhere the caller stages a file."""
    return hasattr(os, "mkfifo")


class _Converter(threading.Thread):
    def __init__(self, source: Path, target: Path, memory_limit: str, threads: int) -> None:
        super().__init__(name="gatewatch-parquet", daemon=True)
        self._args = (source, target, memory_limit, threads)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            convert_to_parquet(*self._args)
        except BaseException as exc:  # handed to the writer's thread
            self.error = exc


def _open_writer(fifo: Path, converter: _Converter) -> BinaryIO:
    """The pipe's write end, once DuckDB has opened its read end (non-blocking open, retried)."""
    deadline = time.monotonic() + _OPEN_TIMEOUT
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if not converter.is_alive() or time.monotonic() > deadline:
                if converter.is_alive():  # stuck before its input: a writer that closes at once ends it
                    os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
                converter.join(_JOIN_TIMEOUT)
                raise converter.error or TimeoutError("DuckDB did not open its input") from None
            time.sleep(0.002)
            continue
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb", buffering=1 << 20)


@contextmanager
def parquet_pipe(
    workdir: Path, target: Path, memory_limit: str = "256MB", threads: int = 1
) -> Iterator[BinaryIO]:
    """A binary file to write the CSV records into (:func:`.exports.csv_header` first); when the block
    ends without an error, ``target`` is the Parquet file :func:`.exports.convert_to_parquet` writes."""
    fifo = workdir / "rows.csv.pipe"
    os.mkfifo(fifo, 0o600)
    converter = _Converter(fifo, target, memory_limit, threads)
    converter.start()
    try:
        out = _open_writer(fifo, converter)
        try:
            yield out
        finally:
            try:
                out.close()
            except BrokenPipeError:  # DuckDB stopped reading: its own error says why
                pass
        converter.join(_JOIN_TIMEOUT)
        if converter.error is not None:
            raise converter.error
    except BrokenPipeError:
        converter.join(_JOIN_TIMEOUT)
        raise converter.error or RuntimeError("DuckDB stopped reading the export") from None
    finally:
        if converter.is_alive():  # the writer failed after DuckDB opened the pipe: it sees the end
            converter.join(_JOIN_TIMEOUT)
        fifo.unlink(missing_ok=True)


class ConversionQueue:
    """Staging CSV files converted to Parquet (:func:`.exports.convert_all_to_parquet`, one connection)
    on a thread of their own, in the order they are submitted, while the caller writes others.

    A file must not be written to while it waits or converts: to write to one again, :meth:`wait` first
    (every file submitted so far converted), then submit it again (its target is written anew). A failed
    conversion ends the thread: :meth:`submit`, :meth:`wait` and :meth:`close` raise its error.
    """

    def __init__(self, memory_limit: str = "256MB", threads: int = 1) -> None:
        self._pending: queue.Queue[tuple[Path, Path] | None] = queue.Queue()
        self._changed = threading.Condition()
        self._submitted = self._converted = 0
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(memory_limit, threads), name="gatewatch-parquet-convert", daemon=True
        )
        self._thread.start()

    def _run(self, memory_limit: str, threads: int) -> None:
        try:
            convert_all_to_parquet(self._pairs(), memory_limit, threads)
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
        finally:
            with self._changed:
                self._stopped = True
                self._changed.notify_all()

    def _pairs(self) -> Iterator[tuple[Path, Path]]:
        while (pair := self._pending.get()) is not None:
            yield pair  # resumed once its COPY has finished
            with self._changed:
                self._converted += 1
                self._changed.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, staging: Path, target: Path) -> None:
        self._raise_error()
        with self._changed:
            self._submitted += 1
        self._pending.put((staging, target))

    def wait(self) -> None:
        """Until every file submitted so far is converted."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._stopped or self._converted >= self._submitted, _JOIN_TIMEOUT
            )
        self._raise_error()
        if not done:
            raise TimeoutError("DuckDB did not finish converting the export's files")

    def close(self, cancel: bool = False) -> None:
        """No more files: until the last is converted, then raises a conversion's error. With ``cancel``
        (the caller is failing with an error of its own), the files not begun are left unconverted and
        nothing is raised; this still returns only once DuckDB writes no more."""
        while cancel:
            try:
                self._pending.get_nowait()
            except queue.Empty:
                break
        self._pending.put(None)
        self._thread.join(_JOIN_TIMEOUT)
        if cancel:
            return
        self._raise_error()
        if self._thread.is_alive():
            raise TimeoutError("DuckDB did not finish converting the export's files")

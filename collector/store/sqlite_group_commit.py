"""Group commit for the SQLite store: batches that arrive while a commit is under way are written together,
in one transaction and one ``fsync``, each in its own savepoint.

A batch's answer (its futures) is given only after the transaction that holds it has committed, so an
acknowledged measurement is durable as before (``synchronous=FULL``), and a crash before the commit loses
only batches nobody was told about. A batch that fails on its own data (a double-spent token, a value the
store cannot take, a constraint) is rolled back to its savepoint and gets its error; the others in the
group are unaffected. Any other error (the disk, the file) fails the whole group, which is rolled back.
Nothing waits to fill a group: with one upload at a time each commits alone, as before.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .base import DoubleSpend, StoreError, UnstorableError

__all__ = ["GroupCommit", "batch_error"]

_Request = TypeVar("_Request")
_Result = TypeVar("_Result")
Run = Callable[[Callable[[sqlite3.Connection], list[object]]], Awaitable[list[object]]]


def batch_error(exc: BaseException) -> BaseException | None:
    """The error one batch's own data caused, as the store reports it; None for any other error."""
    if isinstance(exc, DoubleSpend):
        return exc
    if isinstance(exc, UnicodeEncodeError):  # a lone surrogate cannot become UTF-8 (a NUL can, and is kept)
        return UnstorableError(f"sqlite: {exc.reason}")
    if isinstance(exc, sqlite3.DataError):  # e.g. a string or blob too big
        return UnstorableError(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"sqlite: {exc}")
    return None


@dataclass
class _Waiting(Generic[_Request]):
    request: _Request
    future: asyncio.Future[object]


@dataclass
class GroupCommit(Generic[_Request, _Result]):
    """Writes requests with ``write_one(conn, request)`` on the writer (``run``), grouped (see the module)."""

    run: Run
    write_one: Callable[[sqlite3.Connection, _Request], _Result]
    _waiting: list[_Waiting[_Request]] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None

    async def write(self, request: _Request) -> _Result:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        # shield: an upload whose client went away must not cancel the group's other batches' answers
        return await asyncio.shield(future)  # type: ignore[return-value]

    async def drain(self) -> None:
        """Wait for the batches handed in so far to be written (before closing the store)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            requests = [waiting.request for waiting in group]
            try:
                results = await self.run(functools.partial(self._write_group, requests=requests))
            except asyncio.CancelledError:
                for waiting in group:
                    waiting.future.cancel()
                raise
            except Exception as exc:  # the whole group failed and was rolled back
                results = [exc] * len(group)
            for waiting, result in zip(group, results, strict=True):
                if waiting.future.done():
                    continue
                if isinstance(result, BaseException):
                    waiting.future.set_exception(result)
                else:
                    waiting.future.set_result(result)

    def _write_group(self, conn: sqlite3.Connection, *, requests: list[_Request]) -> list[object]:
        results: list[object] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for request in requests:
                conn.execute("SAVEPOINT gatewatch_batch")
                try:
                    results.append(self.write_one(conn, request))
                except Exception as exc:
                    own = batch_error(exc)
                    if own is None:
                        raise
                    conn.execute("ROLLBACK TO gatewatch_batch")
                    results.append(own)
                conn.execute("RELEASE gatewatch_batch")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

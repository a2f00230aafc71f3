"""``gatewatch-collector serve --workers N``: N worker processes serving one listening socket.

The parent binds the socket once and starts N workers (``spawn``: fresh interpreters) that each accept
connections on it and run the whole application (collector/serve.py): a busy worker leaves new
connections to an idle one. The parent only supervises: a worker that exits is started again (after
``RESTART_DELAY``, doubling up to ``MAX_RESTART_DELAY`` while it keeps dying within ``SETTLED_SECONDS`` of
its start; after ``MAX_QUICK_FAILURES`` such exits in a row the parent gives up and exits 1, as a
collector that cannot start does). SIGTERM or SIGINT to the parent stops every worker the way one process
stops (requests in flight finish, up to ``shutdown_timeout``), then the parent exits. A worker whose parent
is gone (killed with SIGKILL) stops itself.

PostgreSQL only: SQLite has one writer at a time, so several processes would queue on its write lock (and
each would keep its own attribution window without the peer sync that PostgreSQL's collectors run).

``/metrics`` adds up across workers through a metrics folder the parent makes and removes
(collector/workers_metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

from aiohttp import web

from .settings import Settings

__all__ = [
    "MAX_WORKERS",
    "WORKER_HEADER",
    "WorkersError",
    "bind",
    "check_workers",
    "run_workers",
]

MAX_WORKERS = 8
WORKER_HEADER = "Gatewatch-Worker"  # which worker (its process id) answered: the tests see both serve
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
SETTLED_SECONDS = 10.0
MAX_QUICK_FAILURES = 5
_POLL = 0.2  # seconds between the parent's looks at its workers
_PARENT_WATCH = 1.0  # seconds between a worker's looks at its parent
_BACKLOG = 1024

log = logging.getLogger("gatewatch.collector.workers")


class WorkersError(ValueError):
    """A --workers value that cannot be served."""


def check_workers(db: str, workers: int) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise WorkersError(f"between 1 and {MAX_WORKERS} worker processes, not {workers}")
    if workers > 1 and not db.startswith(("postgresql://", "postgres://")):
        raise WorkersError(
            "several worker processes need PostgreSQL: SQLite has one writer at a time, so the workers "
            "would queue on its write lock (use --workers 1, or a postgresql:// database)"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: one the system picks)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)


@dataclass
class _Slot:
    """One worker's place: its current process, when it started, how often it died young in a row."""

    process: BaseProcess
    started: float
    quick_failures: int = 0
    restart_at: float | None = None


def run_workers(settings: Settings, workers: int) -> int:
    """Serve with ``workers`` processes until SIGTERM or SIGINT; the exit status (0, or 1 when workers
    kept failing to start)."""
    from prometheus_client.multiprocess import mark_process_dead

    from .workers_metrics import MULTIPROC_ENV

    check_workers(settings.db, workers)
    sock = bind(settings.listen_host, settings.listen_port)
    folder = Path(tempfile.mkdtemp(prefix="gatewatch-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)  # inherited by the workers before they import prometheus_client
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)
    }

    def start() -> _Slot:
        process = context.Process(
            target=_worker, args=(settings, sock, str(folder), os.getpid()), name="gatewatch-worker"
        )
        process.start()
        return _Slot(process, time.monotonic())

    status = 0
    slots: list[_Slot] = []
    try:
        log.info("listening", extra={"port": sock.getsockname()[1], "workers": workers})
        slots = [start() for _ in range(workers)]
        while not stop.wait(_POLL):
            now = time.monotonic()
            for index, slot in enumerate(slots):
                if slot.process.is_alive():
                    continue
                if slot.restart_at is None:  # just found dead
                    slot.process.join()
                    if slot.process.pid is not None:
                        mark_process_dead(slot.process.pid, str(folder))
                    young = now - slot.started < SETTLED_SECONDS
                    slot.quick_failures = slot.quick_failures + 1 if young else 0
                    delay = min(RESTART_DELAY * 2 ** max(slot.quick_failures - 1, 0), MAX_RESTART_DELAY)
                    slot.restart_at = now + delay
                    log.warning(
                        "worker exited: restarting",
                        extra={"exit_code": slot.process.exitcode, "delay_s": delay},
                    )
                    if slot.quick_failures >= MAX_QUICK_FAILURES:
                        log.error(
                            "workers keep failing to start: stopping", extra={"failures": slot.quick_failures}
                        )
                        status = 1
                        stop.set()
                elif now >= slot.restart_at:
                    failures = slot.quick_failures
                    slots[index] = start()
                    slots[index].quick_failures = failures
        log.info("stopping workers")
    finally:
        _stop_all([slot.process for slot in slots], settings.shutdown_timeout + 5.0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
    log.info("stopped")
    return status


def _stop_all(processes: list[BaseProcess], timeout: float) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker finishes its requests in flight
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.0))
        if process.is_alive():
            log.warning("worker did not stop in time: killed", extra={"pid": process.pid})
            process.kill()
            process.join(5.0)


def _worker(settings: Settings, sock: socket.socket, folder: str, parent: int) -> None:
    """A worker process: the application on the parent's socket, metrics in the parent's folder."""
    from .logging import configure_logging
    from .serve import serve_app
    from .settings import SettingsError
    from .store import StoreError
    from .workers_metrics import WorkersRegistry, snapshots

    configure_logging(settings.log_level)
    registry = WorkersRegistry(Path(folder))

    def prepare(app: web.Application) -> None:
        pid = str(os.getpid())

        async def tag(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[WORKER_HEADER] = pid

        async def alongside(app: web.Application) -> AsyncIterator[None]:
            watch = asyncio.create_task(_watch_parent(parent))
            async with snapshots(registry):
                yield
            watch.cancel()

        app.on_response_prepare.append(tag)
        app.cleanup_ctx.append(alongside)

    try:
        asyncio.run(serve_app(settings, sock=sock, registry=registry, prepare=prepare))
    except (StoreError, OSError, SettingsError) as exc:
        log.error("cannot serve", extra={"error": str(exc)})
        raise SystemExit(1) from None


async def _watch_parent(parent: int) -> None:
    """Stop this worker (as SIGTERM does) once its parent is gone."""
    # Polled: no event tells a process that its parent died (short of prctl, which is Linux-only).
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(_PARENT_WATCH)
    log.warning("the parent process is gone: stopping")
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGTERM)

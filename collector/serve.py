"""Serving the application until SIGINT or SIGTERM: ``gatewatch-collector serve`` in one process, and each
worker process of ``serve --workers N`` (collector/workers.py) on the listening socket its parent bound."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from .app import create_app
from .appkeys import INFLIGHT_KEY
from .http_server import CollectorRunner
from .logging import ACCESS_LOGGER_NAME, AccessLogger
from .settings import Settings

__all__ = ["serve_app"]

log = logging.getLogger("gatewatch.collector")


async def serve_app(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    registry: CollectorRegistry | None = None,
    prepare: Callable[[web.Application], None] | None = None,
) -> None:
    """Serve on ``settings.listen``, or on ``sock`` (already bound and listening) when given; ``prepare``
    may add to the application before it starts."""
    app = create_app(settings, registry=registry)
    if prepare is not None:
        prepare(app)
    runner = CollectorRunner(
        app,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER_NAME),
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()  # opens the store (applying migrations) before anything is accepted
    try:
        site: web.BaseSite
        if sock is None:
            site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        else:
            site = web.SockSite(runner, sock)
        await site.start()
        # The port alone: log lines mask addresses, and the bound port matters when 0 was asked for.
        for address in runner.addresses:
            log.info("listening", extra={"port": address[1]})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: finishing requests in flight", extra={"timeout_s": settings.shutdown_timeout})
        await site.stop()  # no new connections
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await app[INFLIGHT_KEY].drain()
        except TimeoutError:
            log.warning("requests still in flight at the deadline", extra={"count": app[INFLIGHT_KEY].count})
    finally:
        await runner.cleanup()  # close connections, then the store
    log.info("stopped")

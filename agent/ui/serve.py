"""Start the local page, tell the volunteer where it is, and stop when asked or when no page is open."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from .app import UiApp, UiConfig
from .http_server import LocalServer
from .security import SECURITY_HEADERS

__all__ = ["serve"]


async def serve(
    config: UiConfig,
    *,
    announce: Callable[[str], None],
    open_browser: Callable[[str], object] | None = None,
    token: str | None = None,
) -> None:
    """Serve until the page's Quit, the idle timeout, or SIGINT/SIGTERM. ``announce`` gets the address
    (with its token) once listening; ``open_browser`` (``webbrowser.open``) is then called with it."""
    app = UiApp(config, token)
    server = LocalServer(app.handle, SECURITY_HEADERS)
    app.port = await server.start(config.listen.host, config.listen.port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform or thread
            loop.add_signal_handler(signum, app.stopped.set)
    announce(app.url)
    if open_browser is not None:
        # webbrowser may start a program and wait for it: not on the loop that must answer its request.
        await asyncio.to_thread(open_browser, app.url)
    watcher = asyncio.create_task(app.watch_idle())
    try:
        await app.stopped.wait()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await app.runs.close()
        await server.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)

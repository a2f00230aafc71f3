"""The local page served for real: :func:`gatewatch.agent.ui.serve.serve` on a loopback port, on an event
loop of its own in a background thread, so a test talks to it with a plain HTTP client (or a browser)."""

from __future__ import annotations

import asyncio
import http.client
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gatewatch.agent.paths import DataPaths
from gatewatch.agent.ui.app import UiConfig
from gatewatch.agent.ui.runs import LabFlags
from gatewatch.agent.ui.security import cookie_name, parse_listen
from gatewatch.agent.ui.serve import serve

TOKEN = "test-token-0123456789abcdefghijklmnopqrstuv"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class UiServer:
    """One ``serve()`` in a thread. ``stop()`` asks it to stop (as SIGTERM would) and waits."""

    data_dir: Path
    idle_timeout: float = 60.0
    flags: LabFlags = field(default_factory=LabFlags)
    url: str = ""
    port: int = 0
    error: BaseException | None = None

    def start(self) -> UiServer:
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        def announce(url: str) -> None:
            self.url = url
            self.port = int(url.split("]:")[-1].split(":")[-1].split("/")[0])
            ready.set()

        async def main() -> None:
            self._task = asyncio.current_task()
            config = UiConfig(
                DataPaths.at(self.data_dir), parse_listen("127.0.0.1:0"), self.idle_timeout, self.flags
            )
            await serve(config, announce=announce, token=TOKEN)

        def run() -> None:
            try:
                self.loop.run_until_complete(main())
            except BaseException as exc:
                self.error = exc
            finally:
                ready.set()

        self.thread = threading.Thread(target=run, name="gatewatch-ui-test", daemon=True)
        self.thread.start()
        assert ready.wait(20), "the page did not start"
        assert self.error is None, self.error
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cookie(self) -> str:
        return f"{cookie_name(self.port)}={TOKEN}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        host: str | None = None,
        cookie: bool = True,
    ) -> Answer:
        """One request; the Host header and the session cookie are the page's own unless told otherwise."""
        sent = {"Host": host if host is not None else self.host}
        if cookie:
            sent["Cookie"] = self.cookie
        if isinstance(body, str):
            body = body.encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def post(self, path: str, form: str = "", **kwargs: object) -> Answer:
        with_token = f"token={TOKEN}" + (f"&{form}" if form else "")
        return self.request("POST", path, body=with_token, **kwargs)  # type: ignore[arg-type]

    def stopped(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._task.cancel)
            self.thread.join(20)


def consent_form() -> str:
    """The quiz answered rightly, and the box ticked."""
    from gatewatch.agent.consent import QUIZ

    return "&".join(f"q{i}={q.correct}" for i, q in enumerate(QUIZ)) + "&agree=on"

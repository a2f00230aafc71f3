"""Control requests of measurements running together, sent as one ``POST /api/v1/controls``.

A pass measures many URLs at once and each asks for its control as soon as its DNS answered. Those that
ask in the same turn of the event loop (replies that arrived together), or within ``window`` seconds when
one is set, go in one request of up to ``MAX_CONTROL_BATCH``. A batch is answered when its slowest control
is, so a window only pays where the measurements wait anyway: a pass sets one shorter than the probe's DNS
linger (agent/runner.py), which every measurement waits out after its last connection, and so sends
several times fewer requests (each costs both ends CPU) without delaying a URL. A collector without the
batch endpoint (404/405) is asked one URL at a time from then on.

:class:`PassControls` is what a pass asks through: the control of a URL, given the addresses the probe
resolved (never the agent's own), as observations or the failure that stands for them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from gatewatch.core.control import ControlObservations, VouchedControl
from gatewatch.core.wire import MAX_CONTROL_BATCH, ControlRequest

from .addresses import Fallbacks
from .anonymise import Identity
from .collector_api import Address, ApiFailure, request_control, request_controls
from .http_client import HttpClient

__all__ = ["ControlBatcher", "PassControls", "control_addresses"]

Answer = ControlObservations | VouchedControl | ApiFailure
_NO_BATCH_ENDPOINT = ("http_404", "http_405")


class ControlBatcher:
    def __init__(
        self,
        session: HttpClient,
        base: Address | Fallbacks,
        *,
        window: float = 0.0,
        size: int = MAX_CONTROL_BATCH,
        batch: Callable[..., Awaitable[list[Answer] | ApiFailure]] = request_controls,
        single: Callable[..., Awaitable[Answer]] = request_control,
    ) -> None:
        if not 1 <= size <= MAX_CONTROL_BATCH:
            raise ValueError(f"size must be 1 to {MAX_CONTROL_BATCH}")
        self.session, self.base, self.window, self.size = session, base, window, size
        self._batch, self._single = batch, single
        self.batches_supported = True
        self.requests_sent = 0  # HTTP requests made, batch or single (for tests and figures)
        self._waiting: list[tuple[ControlRequest, asyncio.Future[Answer]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def ask(self, request: ControlRequest) -> Answer:
        """The control for ``request``, from the next batch sent."""
        if not self.batches_supported:
            self.requests_sent += 1
            return await self._single(self.session, self.base, request)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((request, answer))
        if len(self._waiting) >= self.size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        return await answer

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = [(request, answer) for request, answer in self._waiting if not answer.done()]
        self._waiting = []
        if waiting:
            task = asyncio.ensure_future(self._send(waiting))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, waiting: list[tuple[ControlRequest, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._answers([request for request, _ in waiting])
        except asyncio.CancelledError:  # close(): the measurements waiting are being abandoned too
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # a bug: the measurements waiting get it (and log it), none waits forever
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for index, (_, future) in enumerate(waiting):
            if not future.done():  # its measurement may have been cancelled meanwhile
                future.set_result(answers if isinstance(answers, ApiFailure) else answers[index])

    async def _answers(self, requests: list[ControlRequest]) -> list[Answer] | ApiFailure:
        if self.batches_supported:
            self.requests_sent += 1
            answers = await self._batch(self.session, self.base, requests)
            if not (isinstance(answers, ApiFailure) and answers.failure in _NO_BATCH_ENDPOINT):
                return answers
            self.batches_supported = False  # an older collector: one URL per request from now on
        self.requests_sent += len(requests)
        return list(await asyncio.gather(*(self._single(self.session, self.base, r) for r in requests)))

    async def close(self) -> None:
        """Stop: requests not yet sent are dropped (their measurements are being abandoned), sends in
        flight are cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, answer in self._waiting:
            answer.cancel()
        self._waiting = []
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


def control_addresses(addresses: Iterable[str], identity: Identity) -> list[str]:
    """Addresses the probe's DNS gave, for the control (minus the agent's own, should a resolver have
    echoed it: the collector must never receive it)."""
    found: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if str(ip) not in found and identity.replacement(ip) is None:
            found.append(str(ip))
    return found[:16]


class PassControls:
    """The controls of one pass, asked of ``base`` (none configured: every URL's control failure says so)."""

    def __init__(self, session: HttpClient, base: Address | Fallbacks | None, *, window: float = 0.0) -> None:
        self.batcher = ControlBatcher(session, base, window=window) if base is not None else None

    async def ask(
        self, url: str, addresses: list[str], identity: Identity
    ) -> tuple[ControlObservations | None, str | None, VouchedControl | None]:
        """(the control, None, the collector's vouch for it if it gave one), or (None, the failure string
        the measurement records instead, None). The measurement embeds the vouch: the collector judges
        only against a control it can authenticate."""
        if self.batcher is None:
            return None, "no_control_configured", None
        request = ControlRequest(input=url, addrs=control_addresses(addresses, identity))
        answer = await self.batcher.ask(request)
        if isinstance(answer, ApiFailure):
            return None, answer.failure, None
        if isinstance(answer, VouchedControl):
            return answer.observations(), None, answer
        return answer, None, None

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

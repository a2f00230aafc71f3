"""Controls batched into ``POST /api/v1/controls`` against the contract collector on 127.0.0.1: one HTTP
request for the controls asked together, in order, per-item errors as the single endpoint's, and a
collector without the batch endpoint asked one URL at a time."""

from __future__ import annotations

import asyncio

import pytest

from gatewatch.agent.collector_api import ApiFailure, make_session
from gatewatch.agent.control_batch import ControlBatcher
from gatewatch.core.control import ControlObservations
from gatewatch.core.wire import ControlRequest

from .collector_contract import ContractCollector


async def _collector(aiohttp_server, **changes) -> ContractCollector:  # type: ignore[no-untyped-def]
    contract = ContractCollector(**changes)
    server = await aiohttp_server(contract.app(), host="127.0.0.1")
    contract.url = str(server.make_url("/"))  # type: ignore[attr-defined]
    return contract


def _requests(n: int) -> list[ControlRequest]:
    return [ControlRequest(input=f"http://site{i}.example/", addrs=["198.51.100.10"]) for i in range(n)]


async def test_controls_asked_together_go_in_one_request_in_order(aiohttp_server) -> None:
    collector = await _collector(aiohttp_server)
    collector.control_errors["http://site2.example/"] = "rate_limited"
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url, window=0.05)  # type: ignore[attr-defined]
        answers = await asyncio.gather(*(batcher.ask(r) for r in _requests(5)))
        await batcher.close()
    assert collector.control_http_requests == 1 == batcher.requests_sent
    assert [body["input"] for body in collector.seen_control_requests] == [r.input for r in _requests(5)]
    assert answers[2] == ApiFailure("http_429", "127.0.0.1")  # what the single endpoint would have said
    assert all(isinstance(a, ControlObservations) for i, a in enumerate(answers) if i != 2)


async def test_a_full_batch_goes_at_once_and_the_rest_after_the_window(aiohttp_server) -> None:
    collector = await _collector(aiohttp_server)
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url, window=0.05, size=4)  # type: ignore[attr-defined]
        answers = await asyncio.gather(*(batcher.ask(r) for r in _requests(10)))
        await batcher.close()
    assert collector.control_http_requests == 3  # 4 + 4 at once, 2 when the window closed
    assert all(isinstance(a, ControlObservations) for a in answers)


async def test_a_collector_without_the_batch_endpoint_is_asked_one_url_at_a_time(aiohttp_server) -> None:
    collector = await _collector(aiohttp_server, batch_endpoint=False)
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url, window=0.01)  # type: ignore[attr-defined]
        first = await asyncio.gather(*(batcher.ask(r) for r in _requests(3)))
        later = await batcher.ask(_requests(1)[0])
        await batcher.close()
    assert not batcher.batches_supported
    assert all(isinstance(a, ControlObservations) for a in [*first, later])
    assert collector.control_http_requests == 4  # the refused batch went to the 404 handler, not here
    assert batcher.requests_sent == 1 + 4


async def test_a_whole_batch_failure_is_each_controls_failure(aiohttp_server) -> None:
    collector = await _collector(aiohttp_server, control_status=503)
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url, window=0.01)  # type: ignore[attr-defined]
        answers = await asyncio.gather(*(batcher.ask(r) for r in _requests(3)))
        await batcher.close()
    assert answers == [ApiFailure("http_503", "127.0.0.1")] * 3
    assert batcher.batches_supported  # a busy collector still has the endpoint


async def test_closing_cancels_what_waits_and_an_abandoned_ask_is_left_out(aiohttp_server) -> None:
    collector = await _collector(aiohttp_server)
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url, window=0.05)  # type: ignore[attr-defined]
        abandoned = asyncio.ensure_future(batcher.ask(_requests(1)[0]))
        kept = asyncio.ensure_future(batcher.ask(_requests(2)[1]))
        await asyncio.sleep(0)
        abandoned.cancel()  # its measurement was cancelled before the batch left
        assert isinstance(await kept, ControlObservations)
        assert [body["input"] for body in collector.seen_control_requests] == ["http://site1.example/"]
        waiting = asyncio.ensure_future(batcher.ask(_requests(3)[2]))
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert collector.control_http_requests == 1


def test_a_batch_size_beyond_the_collectors_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        ControlBatcher(make_session(), "http://127.0.0.1:9/", size=33)


async def test_by_default_controls_asked_in_the_same_turn_share_a_request_and_nothing_waits(
    aiohttp_server,
) -> None:
    collector = await _collector(aiohttp_server)
    async with make_session() as session:
        batcher = ControlBatcher(session, collector.url)  # type: ignore[attr-defined]
        together = await asyncio.gather(*(batcher.ask(r) for r in _requests(3)))  # asked in one turn
        alone = await batcher.ask(_requests(4)[3])  # asked later, alone: sent at once, not held back
        await batcher.close()
    assert all(isinstance(a, ControlObservations) for a in [*together, alone])
    assert collector.control_http_requests == 2

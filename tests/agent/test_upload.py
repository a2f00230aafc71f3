"""Upload against a server speaking the collector's documented contract on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import textwrap

import pytest

from gatewatch.agent.collector_api import make_session
from gatewatch.agent.upload import LAST_UPLOAD_ERROR_KEY, LAST_UPLOAD_KEY, RetryPolicy, Uploader
from gatewatch.core.vocabulary import UID_CONFLICT

from .collector_contract import ContractCollector

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
async def collector(aiohttp_server):
    contract = ContractCollector()
    server = await aiohttp_server(contract.app(), host="127.0.0.1")
    contract.url = str(server.make_url("/"))  # type: ignore[attr-defined]
    return contract


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class _Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def _uploader(queue, urls, session, **kw) -> Uploader:
    kw.setdefault("policy", FAST)
    return Uploader(queue, urls, session, rng=random.Random(1), **kw)


async def test_everything_arrives_once_and_duplicates_count_as_delivered(collector, fill_queue) -> None:
    queue, uids = fill_queue(7)
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session, batch_size=3).upload_pending()
    assert (report.accepted, report.duplicates, report.still_pending) == (7, 0, 0)
    assert report.requests == 3  # batches of 3, 3, 1
    assert set(collector.stored) == set(uids)
    assert queue.counts()["sent"] == 7
    assert queue.get_meta(LAST_UPLOAD_KEY)["accepted"] == 7  # type: ignore[index]
    for uid in uids:
        assert collector.stored[uid] == queue.get(uid).payload  # type: ignore[union-attr]


async def test_only_the_named_measurements_go_the_rest_keeps_waiting(collector, fill_queue) -> None:
    """A confirmation pass uploads its own measurements at once; what else waits keeps its random delay
    after the probes (agent/daemon.py), so it must not ride along."""
    queue, uids = fill_queue(9)
    chosen = {uids[1], uids[4], uids[8]}  # scattered, across several pages of the queue
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session, batch_size=2, only=chosen).upload_pending()
    assert set(collector.stored) == chosen and report.accepted == 3 and report.requests == 2
    assert queue.counts()["sent"] == 3 and queue.counts()["pending"] == 6


async def test_a_lost_answer_is_resent_and_answered_as_duplicate(collector, fill_queue) -> None:
    queue, uids = fill_queue(4)
    collector.lose_answer_after_store = 1
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert (report.accepted, report.duplicates) == (0, 4)
    assert len(collector.stored) == 4 and queue.counts()["pending"] == 0


async def test_rejected_items_are_quarantined_with_the_reason_and_not_retried(collector, fill_queue) -> None:
    queue, uids = fill_queue(3)
    collector.reject_uids = {uids[1]}
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
        assert report.quarantined == 1 and report.accepted == 2
        row = queue.get(uids[1])
        assert row is not None and row.state == "quarantined" and row.reason == "too_old"
        before = collector.requests
        again = await _uploader(queue, [collector.url], session).upload_pending()
    assert collector.requests == before and again.requests == 0


async def test_a_whole_batch_refusal_is_narrowed_to_the_bad_item(collector, fill_queue) -> None:
    queue, uids = fill_queue(6)
    collector.refuse_batches_with = uids[4]
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert report.quarantined == 1 and report.delivered == 5
    assert queue.get(uids[4]).reason == "http_400 invalid_request"  # type: ignore[union-attr]
    assert set(collector.stored) == set(uids) - {uids[4]}


async def test_server_errors_are_retried_with_backoff(collector, fill_queue) -> None:
    queue, uids = fill_queue(2)
    collector.fail_next = [(503, {}), (500, {})]
    sleeps = _Sleeps()
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session, sleep=sleeps).upload_pending()
    assert report.accepted == 2 and report.requests == 3
    assert len(sleeps.delays) == 2 and all(0 <= d <= FAST.max_delay for d in sleeps.delays)


async def test_429_retry_after_is_honoured(collector, fill_queue) -> None:
    queue, _ = fill_queue(1)
    collector.fail_next = [(429, {"Retry-After": "7"})]
    sleeps = _Sleeps()
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=30)
    async with make_session() as session:
        report = await _uploader(
            queue, [collector.url], session, sleep=sleeps, policy=policy
        ).upload_pending()
    assert report.accepted == 1 and sleeps.delays == [7.0]


async def test_unreachable_collectors_keep_rows_pending_after_bounded_attempts(collector, fill_queue) -> None:
    queue, uids = fill_queue(5)
    collector.fail_next = [(502, {})] * 10
    urls = [_closed_port_url(), collector.url]
    sleeps = _Sleeps()
    async with make_session() as session:
        report = await _uploader(
            queue, urls, session, batch_size=2, sleep=sleeps, max_failed_batches=1
        ).upload_pending()
    # One batch tried max_attempts times at each URL, then the pass gives up (the rest waits).
    assert report.requests == FAST.max_attempts * 2 and len(sleeps.delays) == FAST.max_attempts - 1
    assert report.still_pending == 5 and not collector.stored
    assert "http_502" in (report.last_error or "")
    assert queue.get_meta(LAST_UPLOAD_ERROR_KEY)["error"] == report.last_error  # type: ignore[index]
    assert queue.pending_reasons() == {report.last_error: 2, "not tried yet": 3}


_BLOCKPAGE = (403, "<html><title>Access denied by order of the regulator</title></html>", "text/html", {})
_PORTAL = (302, "", "text/html", {"Location": "http://127.0.0.1:1/login"})
_PROXY_LIMIT = (413, "<html>Request Entity Too Large</html>", "text/html", {})
_JSON_LOOKALIKE = (400, '{"error": "invalid_request", "detail": ""}', "text/html", {})
_FOREIGN_JSON = (403, '{"message": "forbidden"}', "application/json", {})


@pytest.mark.parametrize(
    "answer",
    [_BLOCKPAGE, _PORTAL, _PROXY_LIMIT, _JSON_LOOKALIKE, _FOREIGN_JSON],
    ids=["blockpage_403", "portal_302", "proxy_413", "json_body_served_as_html", "other_json_403"],
)
async def test_answers_not_from_the_collector_are_retried_never_quarantined(
    collector, fill_queue, answer
) -> None:
    queue, uids = fill_queue(3)
    collector.raw_next = [answer] * FAST.max_attempts
    async with make_session() as session:
        first = await _uploader(queue, [collector.url], session).upload_pending()
        assert (first.quarantined, first.delivered, first.still_pending) == (0, 0, 3)
        assert f"http_{answer[0]}" in (first.last_error or "")
        assert "regulator" not in (first.last_error or "")  # a middlebox's words are not recorded
        # The next pass (the censor gone, the portal logged into) delivers everything.
        second = await _uploader(queue, [collector.url], session).upload_pending()
    assert (second.quarantined, second.delivered, second.still_pending) == (0, 3, 0)
    assert set(collector.stored) == set(uids)


async def test_the_collectors_own_size_refusal_of_one_item_quarantines_it(collector, fill_queue) -> None:
    queue, uids = fill_queue(3)
    too_large = (413, '{"error": "body_too_large", "detail": "at most 1 bytes"}', "application/json", {})
    collector.block_batches_with, collector.block_answer = uids[0], too_large
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert report.quarantined == 1 and report.delivered == 2
    assert queue.get(uids[0]).reason == "http_413 body_too_large"  # type: ignore[union-attr]


async def test_a_whole_request_refusal_for_no_content_reason_quarantines_nothing(
    collector, fill_queue
) -> None:
    queue, uids = fill_queue(1)
    collector.raw_next = [(415, '{"error": "unsupported_media_type", "detail": ""}', "application/json", {})]
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert report.quarantined == 0 and report.delivered == 1 and report.requests == 2


async def test_a_batch_that_keeps_failing_does_not_hold_back_the_next_ones(collector, fill_queue) -> None:
    queue, uids = fill_queue(6)
    collector.block_batches_with = uids[1]  # the first batch of 2 meets a blockpage every time
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session, batch_size=2).upload_pending()
    assert report.quarantined == 0 and report.delivered == 4 and report.still_pending == 2
    assert set(collector.stored) == set(uids[2:])
    assert queue.get(uids[0]).state == queue.get(uids[1]).state == "pending"  # type: ignore[union-attr]


async def test_several_failed_batches_in_a_row_end_the_upload_pass(collector, fill_queue) -> None:
    queue, uids = fill_queue(8)
    collector.raw_next = [_BLOCKPAGE] * 100
    async with make_session() as session:
        report = await _uploader(
            queue, [collector.url], session, batch_size=2, max_failed_batches=2
        ).upload_pending()
    assert report.requests == 2 * FAST.max_attempts and report.still_pending == 8


async def test_alternative_collector_urls_are_tried_in_order(collector, fill_queue) -> None:
    queue, uids = fill_queue(3)
    async with make_session() as session:
        report = await _uploader(queue, [_closed_port_url(), collector.url], session).upload_pending()
    assert report.accepted == 3 and report.requests == 2
    assert set(collector.stored) == set(uids)


async def test_garbage_answers_are_retried_not_trusted(aiohttp_server, fill_queue) -> None:
    from aiohttp import web

    async def nonsense(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json</html>")

    app = web.Application()
    app.router.add_post("/api/v1/measurements", nonsense)
    server = await aiohttp_server(app, host="127.0.0.1")
    queue, _ = fill_queue(1)
    async with make_session() as session:
        report = await _uploader(queue, [str(server.make_url("/"))], session).upload_pending()
    assert report.delivered == 0 and report.still_pending == 1 and "bad_answer" in (report.last_error or "")


_UPLOADER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gatewatch.agent.collector_api import make_session
    from gatewatch.agent.queue import MeasurementQueue
    from gatewatch.agent.upload import Uploader

    async def main():
        queue = MeasurementQueue(Path(sys.argv[1]))
        async with make_session() as session:
            await Uploader(queue, [sys.argv[2]], session, batch_size=4).upload_pending()

    asyncio.run(main())
    """
)


async def test_kill_9_mid_upload_then_restart_delivers_everything_exactly_once(collector, fill_queue) -> None:
    queue, uids = fill_queue(10)
    collector.hang_on_request = 2  # the second batch is stored, but the answer never comes
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UPLOADER, str(queue.path), collector.url
    )
    try:
        await asyncio.wait_for(collector.stored_and_hanging.wait(), timeout=20)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert len(collector.stored) == 8  # two batches reached the collector before the kill

    collector.hang_on_request = None
    counts = queue.counts()
    assert counts["sent"] == 4 and counts["pending"] == 6  # the unanswered batch is still pending
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert (report.accepted, report.duplicates) == (2, 4)
    assert set(collector.stored) == set(uids) and len(collector.stored) == 10
    assert queue.counts() == {"pending": 0, "sent": 10, "quarantined": 0, "local": 0}


async def test_no_collector_is_a_configuration_error(fill_queue) -> None:
    queue, _ = fill_queue(0)
    async with make_session() as session:
        with pytest.raises(ValueError):
            Uploader(queue, [], session)


async def test_a_uid_conflict_is_quarantined_never_counted_as_delivered(collector, fill_queue) -> None:
    """The collector holds another measurement under this uid: ours was never stored, so it must not be
    marked sent (as a ``duplicate`` would be) but quarantined with the collector's reason."""
    queue, uids = fill_queue(3)
    collector.stored[uids[1]] = b'{"another": "measurement"}'
    async with make_session() as session:
        report = await _uploader(queue, [collector.url], session).upload_pending()
    assert (report.accepted, report.duplicates, report.quarantined) == (2, 0, 1)
    row = queue.get(uids[1])
    assert row is not None and row.state == "quarantined" and row.reason == UID_CONFLICT
    assert report.quarantine_reasons == {UID_CONFLICT: 1}
    assert queue.counts()["sent"] == 2

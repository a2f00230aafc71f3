"""Running and delivering from the page: a run cancelled while it waits for the collector, the queue's
retry delivered to a collector (the contract one, on loopback), and the progress arithmetic."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.ui.runs import LabFlags, Progress

from ..collector_contract import ContractCollector
from ..conftest import make_measurement
from .served import UiServer, consent_form


@pytest.fixture
def contract_collector() -> Iterator[ContractCollector]:
    """The contract collector on a loop of its own (the page's server has another)."""
    contract = ContractCollector()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(contract.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        contract.url = f"http://127.0.0.1:{port}/"  # type: ignore[attr-defined]
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(20)
    try:
        yield contract
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _progress(server: UiServer) -> dict[str, object]:
    return json.loads(server.request("GET", "/api/progress").body)


def _wait_for_phase(server: UiServer, phases: set[str], timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = _progress(server)
        if progress["phase"] in phases:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"progress never reached {phases}: {progress}")


def test_a_run_is_cancelled_while_it_waits_for_the_collector(tmp_path: Path) -> None:
    with socket.socket() as silent:  # a collector that accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        test_list = tmp_path / "list.csv"
        test_list.write_text("url,category_code\nhttp://127.0.0.1:9/,NEWS\n", encoding="utf-8")
        server = UiServer(tmp_path / "agent", flags=LabFlags(input_files=(test_list,))).start()
        try:
            assert server.post("/consent", consent_form()).status == 303
            (server.data_dir / "agent.toml").write_text(f'collector_urls = ["http://127.0.0.1:{port}/"]\n')
            assert server.post("/run/start").headers["location"] == "/run"
            progress = _wait_for_phase(server, {"preparing"})
            assert progress["running"] is True
            again = server.post("/run/start")  # one run at a time
            assert "already" in server.request("GET", again.headers["location"]).text
            assert server.post("/run/cancel").status == 303
            progress = _wait_for_phase(server, {"cancelled"})
            assert progress["running"] is False and "Cancelled" in str(progress["message"])
        finally:
            server.stop()


def test_retry_delivers_what_waits(tmp_path: Path, contract_collector: ContractCollector) -> None:
    server = UiServer(tmp_path / "agent").start()
    try:
        assert server.post("/consent", consent_form()).status == 303
        url = contract_collector.url  # type: ignore[attr-defined]
        (server.data_dir / "agent.toml").write_text(f'collector_urls = ["{url}"]\n')
        uids = []
        with MeasurementQueue(server.data_dir / "queue.sqlite3") as queue:
            for i in range(3):  # queued unsigned, as a pass queues them by default: the batch signs
                m = make_measurement(url=f"http://site{i}.example/")
                queue.enqueue(m.measurement_uid, m.to_json_bytes(), None)
                uids.append(m.measurement_uid)
        before = server.request("GET", "/queue").text
        assert 'id="count-pending">3<' in before and 'id="retry" disabled' not in before
        answer = server.post("/queue/retry")
        assert answer.status == 303
        page = server.request("GET", answer.headers["location"]).text
        assert "Uploaded 3, rejected 0, still waiting 0" in page
        assert 'id="count-pending">0<' in page and 'id="count-sent">3<' in page
        assert set(contract_collector.stored) == set(uids)
        assert (
            contract_collector.token_batches >= 1
        )  # as the CLI's upload: a token per batch, no long-term key
        (server.data_dir / "agent.toml").write_text(f'collector_urls = ["{url}"]\nupload = false\n')
        refused = server.post("/queue/retry")
        assert "uploads are turned off" in server.request("GET", refused.headers["location"]).text
    finally:
        server.stop()


def test_time_left_follows_the_pace_and_the_budget() -> None:
    progress = Progress(phase="measuring", total=100, done=10, started=0.0, max_runtime=1000.0)
    assert progress.seconds_left(now=20.0) == 180.0  # 10 done in 20 s: 90 more take 180 s
    assert progress.seconds_left(now=900.0) == 100.0  # the budget ends first
    assert Progress(phase="measuring", total=5, done=0, started=0.0).seconds_left(now=3.0) is None
    assert Progress(phase="finished", total=5, done=5, started=0.0).seconds_left(now=3.0) is None

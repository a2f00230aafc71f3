from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from typer.testing import CliRunner

from gatewatch.agent.cli import app
from gatewatch.agent.cli_test_list import LIST_REUSE
from gatewatch.agent.consent import load_consent
from gatewatch.agent.paths import DataPaths
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.core.envelope import sign

from .collector_contract import ContractCollector
from .conftest import echoing_keys, make_measurement

runner = CliRunner()
FillQueue = Callable[..., tuple[MeasurementQueue, list[str]]]


def _init(data: Path) -> str:
    result = runner.invoke(
        app, ["init", "--yes", "--data-dir", str(data), "--collector", "http://127.0.0.1:9/"]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_init_shows_the_risks_records_consent_and_creates_the_key(tmp_path: Path) -> None:
    output = _init(tmp_path / "d")
    assert "someone on this network" in output and "IP address" in output
    paths = DataPaths.at(tmp_path / "d")
    assert load_consent(paths.consent) is not None and paths.key.exists()
    assert 'collector_urls = ["http://127.0.0.1:9/"]' in paths.settings.read_text()
    assert "fingerprint" in output.lower()


def test_init_without_agreement_records_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--data-dir", str(tmp_path / "d")], input="n\n")
    assert result.exit_code == 1
    assert load_consent(DataPaths.at(tmp_path / "d").consent) is None


def test_run_refuses_without_consent(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "d"), "--input", "http://127.0.0.1:9/"])
    assert result.exit_code == 2
    assert "no consent" in result.output
    assert not (tmp_path / "d" / "queue.sqlite3").exists()


def test_daemon_refuses_without_consent(tmp_path: Path) -> None:
    result = runner.invoke(app, ["daemon", "--data-dir", str(tmp_path / "d"), "--passes", "1"])
    assert result.exit_code == 2


def test_status_before_and_after_init(tmp_path: Path) -> None:
    data = tmp_path / "d"
    before = runner.invoke(app, ["status", "--data-dir", str(data), "--json"])
    assert before.exit_code == 0
    assert json.loads(before.output)["consent"] is None

    _init(data)
    paths = DataPaths.at(data)
    with MeasurementQueue(paths.queue) as queue:
        from gatewatch.agent.keys import load_key

        key = load_key(paths.key)
        uids = []
        for _ in range(3):
            m = make_measurement(echoing_keys())
            payload = m.to_json_bytes()
            queue.enqueue(m.measurement_uid, payload, sign(payload, key))
            uids.append(m.measurement_uid)
        queue.quarantine(uids[0], "bad_signature")
        queue.record_failure(uids[1:], "collector.example: http_503")
        queue.set_meta(
            "last_upload_error", {"at": "2026-11-23T13:40:00Z", "error": "collector.example: http_503"}
        )

    info = json.loads(runner.invoke(app, ["status", "--data-dir", str(data), "--json"]).output)
    assert info["consent"]["current"] is True and len(info["key_fingerprint"]) == 16
    assert info["queue"]["pending"] == 2 and info["quarantined"][0]["reason"] == "bad_signature"
    assert info["pending_reasons"] == {"collector.example: http_503": 2}

    table = runner.invoke(app, ["status", "--data-dir", str(data)])
    assert table.exit_code == 0
    for text in ("2 waiting", "bad_signature", "http_503", info["key_fingerprint"]):
        assert text in table.output


def test_results_as_json_and_table(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    from gatewatch.agent.keys import load_key

    with MeasurementQueue(paths.queue) as queue:
        m = make_measurement(echoing_keys(), url="http://echo.example/")
        payload = m.to_json_bytes()
        queue.enqueue(m.measurement_uid, payload, sign(payload, load_key(paths.key)))
    rows = json.loads(runner.invoke(app, ["results", "--data-dir", str(data), "--json"]).output)
    assert rows == [
        {
            "measurement_uid": m.measurement_uid,
            "time": "2026-11-23T13:40:00Z",
            "input": "http://echo.example/",
            "probe_asn": "AS64501",
            "probe_cc": "XL",
            "blocking": "dns",
            "layer": "dns",
            "fingerprint": "dns.injection",
            "control_failure": None,
            "state": "pending",
            "reason": None,
        }
    ]
    table = runner.invoke(app, ["results", "--data-dir", str(data)])
    assert table.exit_code == 0 and "blocked (dns)" in table.output


def test_a_bad_settings_file_is_explained(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _init(data)
    DataPaths.at(data).settings.write_text('skip_categorys = ["LGBT"]\n')
    result = runner.invoke(app, ["run", "--data-dir", str(data), "--input", "http://127.0.0.1:9/"])
    assert result.exit_code == 2 and "skip_categorys" in result.output


@contextlib.contextmanager
def _contract_collector(contract: ContractCollector) -> Iterator[str]:
    """The collector's documented answers, served from a thread (the CLI runs its own event loop)."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []

    async def start() -> web.AppRunner:
        app_runner = web.AppRunner(contract.app())
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", 0)
        await site.start()
        ready.append(f"http://127.0.0.1:{app_runner.addresses[0][1]}")
        return app_runner

    app_runner = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(app_runner.cleanup())
        loop.close()


def test_upload_delivers_the_queue_without_measuring(tmp_path: Path, fill_queue: FillQueue) -> None:
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    queue, uids = fill_queue(5)
    queue.close()
    (tmp_path / "queue.sqlite3").replace(paths.queue)
    contract = ContractCollector()
    with _contract_collector(contract) as url:
        first = runner.invoke(app, ["upload", "--data-dir", str(data), "--collector", url])
        again = runner.invoke(app, ["upload", "--data-dir", str(data), "--collector", url])
    assert first.exit_code == 0, first.output
    assert "delivered 5" in first.output and "still pending 0" in first.output
    assert set(contract.stored) == set(uids)
    assert again.exit_code == 0 and "delivered 0" in again.output  # nothing left: nothing sent twice
    assert all(n == 1 for n in contract.receipts.values())


def test_upload_keeps_the_queue_when_the_collector_is_unreachable(
    tmp_path: Path, fill_queue: FillQueue
) -> None:
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    queue, _ = fill_queue(3)
    queue.close()
    (tmp_path / "queue.sqlite3").replace(paths.queue)
    contract = ContractCollector(fail_next=[(503, {})] * 50)
    with _contract_collector(contract) as url:
        result = runner.invoke(app, ["upload", "--data-dir", str(data), "--collector", url])
    assert result.exit_code == 4, result.output
    assert "still pending 3" in result.output
    with MeasurementQueue(paths.queue) as after:
        assert after.counts()["pending"] == 3


_RUN_AND_REPORT_IMPORTS = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps({m: m in sys.modules for m in ("aiohttp", "rich.progress")})))
from gatewatch.agent.cli import main
sys.argv[0] = "gatewatch-agent"
main()
"""


def test_a_run_without_a_terminal_imports_neither_aiohttp_nor_the_progress_bar(tmp_path: Path) -> None:
    # Both cost memory on a volunteer's machine (issue 4): the agent has its own HTTP client, and the
    # progress bar is drawn on a terminal only.
    data = tmp_path / "d"
    _init(data)
    with socket.socket() as sock:  # a closed port on loopback: the measurement fails fast, as data
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    command = [sys.executable, "-c", _RUN_AND_REPORT_IMPORTS, "run", "--data-dir", str(data)]
    # --source-address: the probes (and the agent's route lookups) stay on loopback.
    command += ["--input", url, "--no-upload", "--max-runtime", "20", "--source-address", "127.0.0.1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "1 of 1 measured" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"aiohttp": False, "rich.progress": False}


def _daemon_once(data: Path, url: str) -> Any:
    return runner.invoke(
        app, ["daemon", "--data-dir", str(data), "--collector", url, "--passes", "1", "--upload-delay", "0"]
    )


def test_the_daemon_goes_on_without_a_test_list_and_still_uploads(
    tmp_path: Path, fill_queue: FillQueue
) -> None:
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    queue, uids = fill_queue(3)
    queue.close()
    (tmp_path / "queue.sqlite3").replace(paths.queue)
    contract = ContractCollector()  # serves no test list (404), as a collector under attack might
    with _contract_collector(contract) as url:
        result = _daemon_once(data, url)
    assert result.exit_code == 0, result.output
    assert set(contract.stored) == set(uids)  # what waited was delivered all the same
    with MeasurementQueue(paths.queue) as after:
        last_run = after.get_meta("last_run")
    assert last_run is not None and last_run["total"] == 0


def test_the_daemon_falls_back_to_the_last_list_fetched(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    # one slice: the pass takes the whole list (by default a pass takes one slice of 72)
    paths.settings.write_text(paths.settings.read_text() + "\n[daemon]\nslices = 1\n")
    fetched = (
        "url,category_code,category_description,date_added,source,notes\n"
        "http://127.0.0.1:9/a,NEWS,,,,\nhttp://127.0.0.1:9/b,NEWS,,,,\n"
    )
    # The collector echoes a loopback probe_ip: each pass stops before measuring (no public address),
    # which keeps this test off the network while showing which list the pass took.
    with _contract_collector(ContractCollector(test_list=fetched)) as url:
        first = _daemon_once(data, url)
    assert first.exit_code == 0, first.output
    assert paths.test_list_copy.read_text() == fetched
    _age(paths.test_list_copy, LIST_REUSE + 60)  # old enough to be fetched again
    with _contract_collector(ContractCollector()) as url:  # the list cannot be fetched any more
        result = _daemon_once(data, url)
    assert result.exit_code == 0, result.output
    with MeasurementQueue(paths.queue) as after:
        last_run = after.get_meta("last_run")
    assert last_run is not None and last_run["total"] == 2
    assert last_run["stop_reason"] == "own_address_unknown"


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _last_total(paths: DataPaths) -> int:
    with MeasurementQueue(paths.queue) as queue:
        last_run = queue.get_meta("last_run")
    assert last_run is not None
    return int(last_run["total"])


def test_the_daemon_fetches_the_list_at_most_once_an_hour(tmp_path: Path) -> None:
    """Each pass is one slice, but a fetch brings the whole list: a copy younger than LIST_REUSE is
    measured again instead, and an older one is fetched afresh."""
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    paths.settings.write_text(paths.settings.read_text() + "\n[daemon]\nslices = 1\n")
    header = "url,category_code,category_description,date_added,source,notes\n"
    two = header + "http://127.0.0.1:9/a,NEWS,,,,\nhttp://127.0.0.1:9/b,NEWS,,,,\n"
    three = two + "http://127.0.0.1:9/c,NEWS,,,,\n"
    with _contract_collector(ContractCollector(test_list=two)) as url:
        assert _daemon_once(data, url).exit_code == 0
    assert _last_total(paths) == 2
    with _contract_collector(ContractCollector(test_list=three)) as url:
        assert _daemon_once(data, url).exit_code == 0
    assert _last_total(paths) == 2  # the copy fetched a moment ago, not the collector's new list
    assert paths.test_list_copy.read_text() == two
    _age(paths.test_list_copy, LIST_REUSE + 60)
    with _contract_collector(ContractCollector(test_list=three)) as url:
        assert _daemon_once(data, url).exit_code == 0
    assert _last_total(paths) == 3
    assert paths.test_list_copy.read_text() == three


_MAIN_AND_REPORT_GC = """
import atexit, gc, sys
atexit.register(lambda: print("\\ncollecting", gc.isenabled(), "frozen", gc.get_freeze_count() > 0))
from gatewatch.agent.cli import main
sys.argv[0] = "gatewatch-agent"
main()
"""


def _main(args: list[str]) -> tuple[int, str]:
    command = [sys.executable, "-c", _MAIN_AND_REPORT_GC, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.strip().splitlines()[-1]


def test_the_process_entry_freezes_what_it_made_and_keeps_the_exit_code() -> None:
    # main() ends the process: what it made is frozen so that the interpreter's exit does not walk it
    # (start-up CPU, issue 16); typer's exit codes pass through unchanged (0 for help, 2 for a bad option).
    assert _main(["--help"]) == (0, "collecting False frozen True")
    assert _main(["run", "--concurrency", "0"]) == (2, "collecting False frozen True")


def test_every_command_resumes_collecting_garbage_before_it_works(tmp_path: Path) -> None:
    # main() pauses the collector while the modules load; each command resumes it before its work (the
    # daemon and the page run for days). Each starts here and stops at its first check, collector on.
    data = ["--data-dir", str(tmp_path / "d")]  # no consent there yet
    first_stop = {
        "init": (1, data),  # asks for consent: no answer on stdin
        "run": (2, data),
        "daemon": (2, data),
        "upload": (2, data),
        "status": (0, [*data, "--json"]),
        "results": (0, [*data, "--json"]),
        "ui": (2, ["--listen", "192.0.2.1:0"]),  # not loopback
    }
    assert set(first_stop) == {command.callback.__name__ for command in app.registered_commands}
    for name, (code, args) in first_stop.items():
        assert _main([name, *args]) == (code, "collecting True frozen True"), name

"""The volunteer's address goes nowhere: the lab's echo.lab puts the client's address in a header, the body
and the title, and its resolver answers whoami.echo.lab with the address that asked. After agents in
isp-a and isp-b measured both, neither agent's address is in any byte the agent kept, the collector
stored, logged, exposes as metrics or exports. (Every other spelling: test_privacy_spellings.py.)"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from gatewatch.agent.minimise import DROPPED
from gatewatch.lab.lab import Lab

from .conftest import NetworkPass, whoami_url
from .harness import CollectorProcess, agent_command, read_stored

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def spellings(address: str) -> list[bytes]:
    """The forms an address takes in text: dotted, dashed (host names), reverse-DNS."""
    ip = ipaddress.ip_address(address)
    return [s.encode() for s in (address, address.replace(".", "-"), ip.reverse_pointer)]


def leaks(data: bytes, addresses: list[str]) -> list[str]:
    return [form.decode() for a in addresses for form in spellings(a) if form in data]


def files_under(*paths: Path) -> list[Path]:
    """Each path itself, or (a folder) every file in it; a SQLite database comes with its -wal/-shm."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        else:
            found += sorted(path.parent.glob(path.name + "*"))
    return found


@pytest.fixture(scope="module")
def agent_addresses(lab: Lab, passes: dict[str, NetworkPass]) -> list[str]:
    return [lab.networks[network].source_address for network in passes]


def test_the_echo_really_reached_the_agents(
    lab: Lab, collector: CollectorProcess, passes: dict[str, NetworkPass]
) -> None:
    """Without this the other tests could pass because nothing was echoed: each agent's echo.lab and
    whoami.echo.lab measurements carry the scrub marker where its address was."""
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    for network, done in passes.items():
        echo = json.loads(stored[done.uids[lab.url("echo.lab")]].payload)
        [request] = echo["test_keys"]["requests"]
        response = request["response"]
        headers = dict(response["headers"])
        # Stored minimised (agent/minimise.py): the header's value is dropped, and the page, like the
        # control's, keeps its title (scrubbed) but not its body.
        assert headers.get("X-Client-Address") == DROPPED, (network, headers)
        assert "[scrubbed]" in response["title"], network
        assert response["body"] is None, network
        whoami = json.loads(stored[done.uids[whoami_url(lab)]].payload)
        answers = [a for q in whoami["test_keys"]["queries"] for a in q["answers"]]
        assert answers, f"{network}: the lab resolver gave no whoami answer"
        assert all("[scrubbed]" in json.dumps(a) for a in answers), (network, answers)


def test_no_address_in_the_agents_files(passes: dict[str, NetworkPass], agent_addresses: list[str]) -> None:
    for done in passes.values():
        for path in files_under(done.data_dir):
            assert not leaks(path.read_bytes(), agent_addresses), path


def test_no_address_in_what_the_agent_shows(
    passes: dict[str, NetworkPass], agent_addresses: list[str]
) -> None:
    for done in passes.values():
        assert not leaks((done.run.stdout + done.run.stderr).encode(), agent_addresses), done.network
        for command in (["results", "--json", "--limit", "100"], ["status", "--json"]):
            shown = subprocess.run(
                agent_command(*command, "--data-dir", str(done.data_dir)),
                capture_output=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert shown.returncode == 0, shown.stderr
            assert not leaks(shown.stdout + shown.stderr, agent_addresses), (done.network, command)


def test_no_address_in_the_collector(
    collector: CollectorProcess, passes: dict[str, NetworkPass], agent_addresses: list[str]
) -> None:
    stored = read_stored(collector.db_path)
    assert {uid for done in passes.values() for uid in done.uids.values()} <= {
        r.measurement_uid for r in stored
    }
    for row in stored:
        assert not leaks(row.payload + row.verdict_json.encode() + row.input.encode(), agent_addresses)
    # The store's files as bytes: every table, index, and the write-ahead log.
    for path in files_under(collector.db_path):
        assert not leaks(path.read_bytes(), agent_addresses), path
    for path in ("/metrics", "/api/v1/measurements?limit=1000", "/api/v1/interference?cc=XL"):
        status, body = collector.get(path)
        assert status == 200, (path, status)
        assert not leaks(body, agent_addresses), path
    for fmt in ("jsonl", "csv"):
        status, body = collector.get(f"/api/v1/measurements/export?format={fmt}")
        assert status == 200, (fmt, status)
        assert body.count(b"echo.lab") >= 2 * len(passes), fmt  # the echoing measurements are in it
        assert not leaks(body, agent_addresses), fmt
    # Last, the log: it covers every request above.
    assert collector.log is not None
    assert collector.log.lines, "the collector logged nothing"
    assert not leaks(collector.log.text.encode(), agent_addresses)
    assert not leaks(collector.log_path.read_bytes(), agent_addresses)

"""The volunteer's address in no spelling at all, end to end: the lab's echo site answers ``/spellings`` with
a redirect whose Location (and so the next request's URL) holds the client's address with percent-encoded
dots, then a page holding it in every spelling of :func:`gatewatch.lab.echo.address_spellings` (body,
title, response headers, a base64 token in a Set-Cookie). The real agent measures it from isp-a (default
storage policy) and isp-b (``keep_full_bodies = true``, so the whole page is stored and its scrubbing is
seen) and uploads to a real collector of this module's own. Afterwards no spelling of either agent's
address is in the store's files, the collector's log, any export (JSONL, CSV, Parquet and OONI's format,
from the API and from ``gatewatch-collector export``), /metrics, the agents' files or their output."""

from __future__ import annotations

import gzip
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatewatch.agent.minimise import BODY_POLICY_ANNOTATION, CANDIDATE_BODIES, DROPPED, FULL_BODIES
from gatewatch.agent.settings import FULL_BODIES_WARNING
from gatewatch.lab.echo import SPELLINGS_PATH, address_spellings
from gatewatch.lab.lab import Lab
from gatewatch.lab.scripts import COLLECTOR, console_script

from .harness import AgentRun, CollectorProcess, init_agent, read_stored, run_agent
from .test_scrubbing import files_under

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SETTINGS = {"isp-a": "", "isp-b": "keep_full_bodies = true\n"}


@dataclass(frozen=True)
class SpelledRun:
    collector: CollectorProcess
    addresses: list[str]
    runs: dict[str, AgentRun]
    data_dirs: dict[str, Path]
    url: str


@pytest.fixture(scope="module")
def spelled(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpelledRun]:
    collector = CollectorProcess(tmp_path_factory.mktemp("collector-spellings"), lab)
    url = f"http://echo.lab:{lab.http_port}{SPELLINGS_PATH}"
    try:
        collector.start()
        runs, data_dirs = {}, {}
        for network, settings in SETTINGS.items():
            data_dir = tmp_path_factory.mktemp(f"agent-spellings-{network}")
            init_agent(data_dir, settings)
            run = run_agent(lab, network, data_dir, collector.url, [url])
            assert run.returncode == 0, f"{network}:\n{run.stdout}\n{run.stderr}"
            runs[network], data_dirs[network] = run, data_dir
        addresses = [lab.networks[network].source_address for network in SETTINGS]
        yield SpelledRun(collector, addresses, runs, data_dirs, url)
    finally:
        collector.stop()


def _forms(addresses: list[str]) -> dict[str, bytes]:
    """Every spelling, as bytes, and as it reads inside a JSON string (a backslash doubles)."""
    found: dict[str, bytes] = {}
    for address in addresses:
        for name, value in address_spellings(address).items():
            found[f"{address} {name}"] = value.encode()
            found[f"{address} {name} (in JSON)"] = json.dumps(value)[1:-1].encode()
    return found


def leaks(data: bytes, addresses: list[str]) -> list[str]:
    return [name for name, form in _forms(addresses).items() if form in data]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _decoded(payload: bytes) -> bytes:
    """Every string of a JSON document, unescaped, one per line."""
    return "\n".join(_strings(json.loads(payload))).encode()


def _stored(spelled: SpelledRun) -> dict[str, dict]:  # type: ignore[type-arg]
    """network -> the stored measurement of the spellings URL (by the probe's ASN)."""
    rows = [json.loads(row.payload) for row in read_stored(spelled.collector.db_path)]
    asn = {"AS64501": "isp-a", "AS64502": "isp-b"}
    return {asn[m["probe_asn"]]: m for m in rows if m["input"] == spelled.url}


def test_the_echo_really_reached_the_agents(spelled: SpelledRun) -> None:
    """Without this the other tests could pass because nothing was echoed."""
    stored = _stored(spelled)
    assert set(stored) == set(SETTINGS)
    for network, m in stored.items():
        first, landing = m["test_keys"]["requests"]
        assert "[scrubbed]" in dict(first["response"]["headers"])["Location"], network
        assert "[scrubbed]" in landing["request"]["url"], network
        response = landing["response"]
        headers = dict(response["headers"])
        assert "[scrubbed]" in headers["Server"], network  # a kept value, scrubbed
        assert headers["X-Seen-plain"] == DROPPED and headers["Set-Cookie"] == DROPPED, network
        assert response["title"] == "Seen from [scrubbed]", network
    # The default keeps no body of a page like the control's; the opt-in keeps it, scrubbed.
    assert stored["isp-a"]["annotations"][BODY_POLICY_ANNOTATION] == CANDIDATE_BODIES
    assert stored["isp-a"]["test_keys"]["requests"][1]["response"]["body"] is None
    assert stored["isp-b"]["annotations"][BODY_POLICY_ANNOTATION] == FULL_BODIES
    body = stored["isp-b"]["test_keys"]["requests"][1]["response"]["body"]
    assert body.count("[scrubbed]") >= len(address_spellings(spelled.addresses[1])), body
    assert FULL_BODIES_WARNING in " ".join(spelled.runs["isp-b"].stderr.split())
    assert FULL_BODIES_WARNING not in " ".join(spelled.runs["isp-a"].stderr.split())


def test_the_verdict_is_the_same_under_either_policy(spelled: SpelledRun) -> None:
    rows = [r for r in read_stored(spelled.collector.db_path) if r.input == spelled.url]
    assert [json.loads(r.verdict_json)["blocking"] for r in rows] == [False, False]


def test_no_spelling_in_the_store(spelled: SpelledRun) -> None:
    for row in read_stored(spelled.collector.db_path):
        data = row.payload + row.verdict_json.encode() + row.input.encode()
        assert not leaks(data + _decoded(row.payload), spelled.addresses)
    paths = files_under(spelled.collector.db_path)
    assert paths
    for path in paths:  # every table, index and the write-ahead log, as bytes
        assert not leaks(path.read_bytes(), spelled.addresses), path


def test_no_spelling_in_the_api_exports_or_metrics(spelled: SpelledRun, tmp_path: Path) -> None:
    collector = spelled.collector
    for path in ("/metrics", "/api/v1/measurements?limit=1000", "/api/v1/interference?cc=XL"):
        status, body = collector.get(path)
        assert status == 200, (path, status)
        assert not leaks(body, spelled.addresses), path
    for fmt in ("jsonl", "csv", "ooni"):
        status, body = collector.get(f"/api/v1/measurements/export?format={fmt}")
        assert status == 200, (fmt, status)
        assert body.count(b"echo.lab") >= len(SETTINGS), fmt
        assert not leaks(body, spelled.addresses), fmt
        if fmt in ("jsonl", "ooni"):
            for line in body.splitlines():
                assert not leaks(_decoded(line), spelled.addresses)
    status, body = collector.get("/api/v1/measurements/export?format=parquet")
    assert status == 200
    duckdb = pytest.importorskip("duckdb")
    parquet = tmp_path / "export.parquet"
    parquet.write_bytes(body)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{parquet}')").fetchall()
    text = "\n".join(map(repr, rows)).encode()
    assert b"echo.lab" in text
    assert not leaks(text + body, spelled.addresses)


def _file_text(path: Path) -> bytes:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".parquet":
        duckdb = pytest.importorskip("duckdb")
        rows = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
        return path.read_bytes() + "\n".join(map(repr, rows)).encode()
    return path.read_bytes()


def test_no_spelling_in_the_export_command(spelled: SpelledRun, tmp_path: Path) -> None:
    for fmt in ("jsonl", "csv", "ooni", "parquet"):
        out = tmp_path / fmt
        done = subprocess.run(
            [console_script(COLLECTOR), "export", "--db", f"sqlite:///{spelled.collector.db_path}",
             "--out", str(out), "--format", fmt],
            capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files, fmt
        exported = b"".join(map(_file_text, files))
        assert b"echo.lab" in exported, fmt
        assert not leaks(exported + done.stdout + done.stderr, spelled.addresses), fmt


def test_no_spelling_in_the_agents(spelled: SpelledRun) -> None:
    for network, data_dir in spelled.data_dirs.items():
        for path in files_under(data_dir):
            assert not leaks(path.read_bytes(), spelled.addresses), path
        run = spelled.runs[network]
        assert not leaks((run.stdout + run.stderr).encode(), spelled.addresses), network


def test_no_spelling_in_the_collector_log(spelled: SpelledRun) -> None:
    """Last: the log covers every request the tests above made."""
    log = spelled.collector.log
    assert log is not None and log.lines
    assert not leaks(log.text.encode(), spelled.addresses)
    assert not leaks(spelled.collector.log_path.read_bytes(), spelled.addresses)

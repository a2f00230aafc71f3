"""``gatewatch-collector import-ooni`` over OONI-format Web Connectivity measurements this test writes itself:
the real command in a subprocess, the real store, then the real app's interference API over what it stored."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gatewatch.analysis import load_default_fingerprints
from gatewatch.collector.app import create_app
from gatewatch.collector.cli import cli
from gatewatch.collector.exports import jsonl_line
from gatewatch.collector.import_ooni import (
    IMPORT_SCHEME,
    NotImportable,
    judge_ooni,
    measurement_from_ooni,
)
from gatewatch.collector.settings import Settings as CollectorSettings
from gatewatch.collector.store import MeasurementFilter, open_store
from gatewatch.collector.verify_cmd import verify_file
from gatewatch.core.vocabulary import ANALYSIS_ERROR, OONI_IMPORT, SCHEME_UNSIGNED_IMPORT

SITE_IP = "93.184.216.34"
INJECTED_IP = "10.10.34.35"
PROBE_IP = "203.0.113.77"  # a real-looking probe address in the file: it must not survive the import


def collector_command() -> list[str]:
    script = Path(sys.executable).parent / "gatewatch-collector"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gatewatch.collector.cli"]


def ooni_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def ooni_web_connectivity(
    *,
    asn: str = "AS64501",
    cc: str = "XL",
    host: str = "blocked.example",
    injected: bool = True,
    started: datetime | None = None,
    report: str = "r1",
    probe_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """An OONI Web Connectivity measurement (ts-017 over df-001/002/005/006) of http://HOST/: the DNS answer
    is either the site's address or an injected private one that nothing listens on."""
    started = started or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    answer_ip = INJECTED_IP if injected else SITE_IP
    body = "<html><head><title>Example Domain</title></head><body>hello</body></html>"
    requests: list[dict[str, Any]] = [
        {
            "failure": None if not injected else "generic_timeout_error",
            "request": {
                "url": f"http://{host}/",
                "method": "GET",
                "headers_list": [["Host", host], ["User-Agent", "ooniprobe"]],
                "headers": {"Host": host, "User-Agent": "ooniprobe"},
                "body": "",
                "body_is_truncated": False,
                "tor": {"is_tor": False, "exit_ip": None, "exit_name": None},
                "x_transport": "tcp",
            },
            "response": {"body": None, "code": 0, "headers": {}, "headers_list": []}
            if injected
            else {
                "body": {"format": "base64", "data": base64.b64encode(body.encode()).decode()},
                "body_is_truncated": False,
                "code": 200,
                "headers_list": [["Content-Type", "text/html"], ["Server", "ECS"]],
                "headers": {"Content-Type": "text/html", "Server": "ECS"},
            },
            "t0": 0.2,
            "t": 10.2,
        }
    ]
    return {
        "annotations": {"platform": "linux", "network_type": "wifi"},
        "data_format_version": "0.2.0",
        "input": f"http://{host}/",
        "measurement_start_time": ooni_time(started),
        "probe_asn": asn,
        "probe_cc": cc,
        "probe_ip": probe_ip,
        "probe_network_name": "Example ISP",
        "report_id": f"20261204T000000Z_webconnectivity_{cc}_{asn[2:]}_n1_{report}",
        "resolver_asn": asn,
        "resolver_ip": "198.51.100.53",
        "resolver_network_name": "Example ISP",
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_keys": {
            "client_resolver": "198.51.100.53",
            "queries": [
                {
                    "answers": [{"answer_type": "A", "ipv4": answer_ip, "ttl": 300, "asn": 0}],
                    "engine": "getaddrinfo",
                    "failure": None,
                    "hostname": host,
                    "query_type": "A",
                    "resolver_address": "",
                    "rcode": 0,
                    "t0": 0.0,
                    "t": 0.1,
                },
                {  # a query type gatewatch does not ask: dropped, not fatal
                    "answers": [],
                    "engine": "udp",
                    "failure": None,
                    "hostname": host,
                    "query_type": "HTTPS",
                    "resolver_address": "8.8.8.8:53",
                    "t0": 0.0,
                    "t": 0.1,
                },
            ],
            "tcp_connect": [
                {
                    "ip": answer_ip,
                    "port": 80,
                    "status": {
                        "success": not injected,
                        "failure": "generic_timeout_error" if injected else None,
                        "blocked": injected,
                    },
                    "t0": 0.1,
                    "t": 10.1,
                }
            ],
            "requests": requests,
            "control_failure": None,
            "control": {
                "tcp_connect": {f"{SITE_IP}:80": {"status": True, "failure": None}},
                "http_request": {
                    "body_length": len(body),
                    "failure": None,
                    "title": "Example Domain",
                    "headers": {"Content-Type": "text/html", "Server": "ECS"},
                    "status_code": 200,
                },
                "dns": {"failure": None, "addrs": [SITE_IP]},
            },
            # OONI's own verdict: ignored, gatewatch judges again.
            "blocking": False,
            "accessible": True,
            "dns_consistency": "consistent",
        },
        "test_name": "web_connectivity",
        "test_runtime": 10.3,
        "test_start_time": ooni_time(started - timedelta(seconds=30)),
        "test_version": "0.4.3",
        "measurement_uid": f"20261204000000.000000_{cc}_webconnectivity_{report}",
    }


def line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc) + "\n").encode()


@pytest.fixture(scope="module")
def fingerprints() -> Any:
    return load_default_fingerprints()


def test_mapping_drops_the_probe_address_and_marks_the_import() -> None:
    m = measurement_from_ooni(line(ooni_web_connectivity(probe_ip=PROBE_IP)))
    text = m.to_json_bytes().decode()
    assert PROBE_IP not in text and "198.51.100.53" not in text  # neither the probe's nor its resolver's
    assert m.annotations["gatewatch_import"] == IMPORT_SCHEME
    assert "platform" not in m.annotations  # OONI's annotations are not carried over
    assert [q.query_type for q in m.test_keys.queries] == ["A"]
    assert m.test_keys.queries[0].rcode == "NOERROR" and m.test_keys.queries[0].engine == "system"
    assert m.test_keys.tcp_connect[0].success is False
    assert m.test_keys.control is not None and m.test_keys.control.dns.addrs == [SITE_IP]
    # The same OONI measurement always maps to the same uid (a re-import is a duplicate, not a copy).
    again = measurement_from_ooni(
        line(ooni_web_connectivity(probe_ip=PROBE_IP, started=m.measurement_start_time))
    )
    assert again.measurement_uid == m.measurement_uid


def test_a_real_probe_address_is_scrubbed_wherever_it_appears() -> None:
    doc = ooni_web_connectivity(injected=False, probe_ip=PROBE_IP)
    response = doc["test_keys"]["requests"][0]["response"]
    response["body"] = f"<html><title>whoami</title>your address is {PROBE_IP}</html>"
    response["headers_list"].append(["X-Client-IP", PROBE_IP])
    m = measurement_from_ooni(line(doc))
    assert PROBE_IP not in m.to_json_bytes().decode()
    assert "[scrubbed]" in (m.test_keys.requests[0].response.body or "")


def test_gatewatch_judges_again(fingerprints: Any) -> None:
    now = datetime.now(UTC)
    injected = judge_ooni(line(ooni_web_connectivity()), fingerprints, (), now)
    assert injected.blocking == "dns" and injected.anomaly  # OONI's file said blocking false
    assert injected.flags == (OONI_IMPORT,)
    assert injected.technique is not None and injected.technique.startswith("dns.")
    clean = judge_ooni(
        line(ooni_web_connectivity(injected=False, host="open.example")), fingerprints, (), now
    )
    assert clean.blocking == "false" and not clean.anomaly


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (json.dumps({"test_name": "telegram"}).encode(), "not_web_connectivity"),
        (line({**ooni_web_connectivity(), "measurement_start_time": "yesterday"}), "bad_time"),
        (line({**ooni_web_connectivity(), "input": None}), "no_input"),
        (line({**ooni_web_connectivity(), "probe_cc": "Italy"}), "invalid_probe_cc"),
    ],
)
def test_lines_that_cannot_be_imported_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(NotImportable, match=reason):
        measurement_from_ooni(raw)


async def run_import(db: str, *files: Path) -> subprocess.CompletedProcess[bytes]:
    command = [*collector_command(), "import-ooni", "--db", db, *map(str, files)]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=120)


async def stored_rows(db: str) -> list[Any]:
    store = await open_store(db)
    try:
        return [row async for row in store.iterate(MeasurementFilter())]
    finally:
        await store.close()


async def test_import_command_stores_judged_unsigned_rows_and_the_api_attributes_them(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    # The same injected answer in three networks of one country (a gateway), and one clean site.
    docs = [ooni_web_connectivity(asn=f"AS6450{n}", report=f"g{n}{k}") for n in range(1, 4) for k in range(3)]
    docs += [ooni_web_connectivity(injected=False, host="open.example", report=f"c{k}") for k in range(3)]
    plain = tmp_path / "part1.jsonl"
    plain.write_bytes(b"".join(line(d) for d in docs[:5]) + b"{broken\n")
    packed = tmp_path / "part2.jsonl.gz"
    packed.write_bytes(gzip.compress(b"".join(line(d) for d in docs[5:])))

    done = await run_import(db, plain, packed)
    assert done.returncode == 0, done.stderr
    assert b"imported 12" in done.stdout and b"invalid_json 1" in done.stdout, done.stdout
    rows = await stored_rows(db)
    assert len(rows) == 12
    assert all(row.flags == (OONI_IMPORT,) for row in rows)
    assert all(json.loads(row.payload)["annotations"]["gatewatch_import"] == IMPORT_SCHEME for row in rows)
    assert {row.blocking for row in rows if row.domain == "blocked.example"} == {"dns"}
    assert {row.blocking for row in rows if row.domain == "open.example"} == {"false"}

    # Unsigned, and said so: every export names the scheme, and `verify` counts them apart from signed rows.
    assert {row.signature_scheme for row in rows} == {SCHEME_UNSIGNED_IMPORT}
    export = tmp_path / "export.jsonl"
    export.write_bytes(b"".join(jsonl_line(row) for row in rows))
    assert {json.loads(x)["signed"]["signature_scheme"] for x in export.read_text().splitlines()} == {
        SCHEME_UNSIGNED_IMPORT
    }
    report = verify_file(export, {})
    assert (report.unsigned, report.verified, report.unverifiable, report.failures) == (12, 0, 0, [])

    again = await run_import(db, plain, packed)  # the same files again: nothing stored twice
    assert again.returncode == 0 and b"imported 0, already stored 12" in again.stdout, again.stdout
    assert len(await stored_rows(db)) == 12

    client = await aiohttp_client(create_app(CollectorSettings(db=db)))
    response = await client.get("/api/v1/interference", params={"cc": "XL"})
    assert response.status == 200
    rows_by_domain = {row["domain"]: row for row in (await response.json())["results"]}
    assert rows_by_domain["blocked.example"]["scope"] == "gateway", rows_by_domain
    assert "open.example" not in rows_by_domain  # only gateway and isp rows by default
    metrics = await (await client.get("/metrics")).text()
    assert 'domain="blocked.example"' in metrics


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(cli, ["import-ooni", "--db", db, str(tmp_path / "no")])
    assert result.exit_code == 2 and "readable" in result.output, result.output
    assert not (tmp_path / "x.db").exists()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
PATHS = [
    ("test_keys",),
    ("test_keys", "queries"),
    ("test_keys", "queries", 0),
    ("test_keys", "queries", 0, "answers"),
    ("test_keys", "queries", 0, "rcode"),
    ("test_keys", "tcp_connect", 0, "status"),
    ("test_keys", "tcp_connect", 0, "port"),
    ("test_keys", "requests", 0, "request"),
    ("test_keys", "requests", 0, "response", "body"),
    ("test_keys", "requests", 0, "response", "headers_list"),
    ("test_keys", "control"),
    ("test_keys", "control", "tcp_connect"),
    ("test_keys", "control", "http_request", "status_code"),
    ("test_keys", "gatewatch"),
    ("probe_ip",),
    ("test_runtime",),
    ("annotations",),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), value=JSON_VALUES)
def test_any_value_anywhere_is_imported_or_skipped_never_a_crash(
    path: tuple[Any, ...], value: Any, fingerprints: Any
) -> None:
    """One odd field costs that entry or that line (NotImportable), never the import."""
    doc = ooni_web_connectivity(started=datetime(2026, 11, 23, 13, 40, tzinfo=UTC))
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    try:
        raw = json.dumps(doc).encode()
    except ValueError:  # a float JSON cannot carry
        return
    try:
        row = judge_ooni(raw, fingerprints, (), datetime.now(UTC))
    except NotImportable:
        return
    assert row.flags in ((OONI_IMPORT,), (OONI_IMPORT, ANALYSIS_ERROR))


def test_an_asn_database_is_used_for_the_dns_answers(tmp_path: Path) -> None:
    asn = tmp_path / "asn.csv"
    asn.write_text("93.184.216.0,93.184.216.255,15133,Example Net\n")
    source = tmp_path / "one.jsonl"
    source.write_bytes(line(ooni_web_connectivity(injected=False, host="open.example")))
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(cli, ["import-ooni", "--db", db, "--asn-db", str(asn), str(source)])
    assert result.exit_code == 0, result.output
    assert "imported 1" in result.output
    (row,) = asyncio.run(stored_rows(db))
    assert row.blocking == "false" and row.flags == (OONI_IMPORT,)

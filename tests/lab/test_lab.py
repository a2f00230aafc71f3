"""The Lab object: its public description, geolocation files, the CLI, and a clean teardown."""

from __future__ import annotations

import asyncio
import csv
import os
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatewatch.lab import Lab, ScenarioError
from gatewatch.lab.cli import app
from gatewatch.lab.networks import BOGUS_ADDRESS
from gatewatch.lab.pages import BLOCKPAGE_MARKER, blockpage
from gatewatch.probes.config import WebConfig

from .conftest import http_get, https_get

pytestmark = pytest.mark.lab

# The analysis' data as installed (package data), not the source tree's copy: a missing file fails here.
DATA = resources.files("gatewatch.analysis") / "data"
OONI_HEADER = [
    "name", "scope", "other_names", "location_found", "pattern_type", "pattern",
    "confidence_no_fp", "expected_countries", "source", "exp_url", "notes",
]  # fmt: skip


async def test_urls_carry_the_scheme_and_the_port(lab: Lab) -> None:
    urls = lab.urls()
    assert len(urls) == sum(len(d.schemes) for d in lab.scenario.domains) > len(lab.scenario.domains)
    assert {u for u in urls if "hostfilter.lab" in u} == {
        f"http://hostfilter.lab:{lab.http_port}/",
        f"https://hostfilter.lab:{lab.https_port}/",
    }
    assert lab.url("clean.lab") == f"http://clean.lab:{lab.http_port}/"
    assert lab.url("secure.lab") == f"https://secure.lab:{lab.https_port}/"
    assert lab.http_port != lab.https_port and 1024 <= min(lab.http_port, lab.https_port)
    assert lab.resolver == f"127.53.0.1:{lab.dns_port}"
    assert lab.server_address("nonexistent.lab") is None
    assert {lab.server_address(d.name) for d in lab.scenario.domains if d.exists} <= {
        f"127.80.0.{i}" for i in range(10, 256)
    }


async def test_expected_blocking_by_url_or_domain(lab: Lab) -> None:
    assert lab.expected(lab.url("blockpage.lab"), "isp-a") == "http-diff"
    assert lab.expected("isp-blockpage.lab", "isp-b") is False
    assert lab.expected(lab.url("blackhole.lab"), "isp-b") == "tcp_ip"
    assert lab.expected("injected.lab", "clean") is False
    assert lab.expected(lab.url("hostfilter.lab", "http"), "isp-a") == "http-diff"
    assert lab.expected(lab.url("hostfilter.lab", "https"), "isp-a") is False
    assert lab.expected(lab.url("snifilter.lab", "https"), "isp-b") == "http-failure"
    assert lab.expected(lab.url("snifilter.lab", "http"), "isp-b") is False
    with pytest.raises(KeyError):
        lab.expected("clean.lab", "isp-z")
    with pytest.raises(KeyError):
        lab.expected("http://elsewhere.example/", "isp-a")


async def test_web_configs_point_the_probes_into_the_lab(lab: Lab) -> None:
    config = lab.web_config("isp-b")
    assert isinstance(config, WebConfig)
    assert (config.dns.resolver, config.dns.source_address) == (lab.resolver, "127.66.0.10")
    assert config.dns.routable == ("127.0.0.0/8",)
    assert (config.dns.timeout, config.dns.linger) == (2.0, 0.1)
    assert (config.tcp.source_address, config.tcp.timeout) == ("127.66.0.10", 1.0)
    assert (config.tls.ca_file, config.tls.timeout) == (lab.ca_file, 2.0)
    assert config.http.timeout == 3.0
    assert lab.web_config().tcp.source_address == "127.65.0.10"
    assert lab.control_config().tcp.source_address == "127.0.0.1"
    ca_pem = await asyncio.to_thread(Path(lab.ca_file).read_text)
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")


async def test_geolocation_csvs_cover_every_network_and_the_servers(lab: Lab, tmp_path: Path) -> None:
    lab.write_asn_csv(tmp_path / "asn.csv")
    lab.write_country_csv(tmp_path / "country.csv")
    asn_rows = list(csv.reader((tmp_path / "asn.csv").open()))
    cc_rows = list(csv.reader((tmp_path / "country.csv").open()))
    assert ["127.0.0.1", "127.0.0.1", "64500", "Lab Transit"] in asn_rows
    assert ["127.65.0.0", "127.65.255.255", "64501", "Lab ISP A"] in asn_rows
    assert ["127.66.0.0", "127.66.255.255", "64502", "Lab ISP B"] in asn_rows
    assert ["127.80.0.0", "127.80.255.255", "64600", "Lab Hosting"] in asn_rows
    assert ["127.0.0.1", "127.0.0.1", "XT"] in cc_rows
    assert ["127.65.0.0", "127.65.255.255", "XL"] in cc_rows
    assert ["127.80.0.0", "127.80.255.255", "XL"] in cc_rows
    assert [r[:2] for r in asn_rows] == [r[:2] for r in cc_rows]  # the same ranges, in the same order
    starts = [tuple(int(p) for p in r[0].split(".")) for r in asn_rows]
    assert starts == sorted(starts)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def exercise(lab: Lab) -> None:
    """Traffic that makes the lab open (and must close) sockets of every kind."""
    clean = lab.server_address("clean.lab") or ""
    await asyncio.to_thread(http_get, "127.65.0.10", clean, lab.http_port, "blockpage.lab")
    secure = lab.server_address("secure.lab") or ""
    await asyncio.to_thread(https_get, "127.0.0.1", secure, lab.https_port, "secure.lab", lab.ca_file)
    with pytest.raises(ConnectionResetError):
        await asyncio.to_thread(
            https_get, "127.65.0.10", secure, lab.https_port, "sni-reset.lab", lab.ca_file
        )


async def test_start_and_close_leave_no_sockets_or_tasks_behind() -> None:
    async with await Lab.start() as warm_up:  # first use loads lazily-imported modules
        await exercise(warm_up)
    before = open_fds()
    tasks_before = asyncio.all_tasks()
    lab = await Lab.start()
    assert len(open_fds() - before) >= 20  # listeners for every server address, and the resolver
    await exercise(lab)
    # A connection left open by a client is the lab's to close at shutdown.
    idle = await asyncio.open_connection(lab.server_address("clean.lab"), lab.http_port)
    tmp_dir = Path(lab.ca_file).parent
    await lab.close()
    await lab.close()  # idempotent
    idle[1].close()
    await idle[1].wait_closed()
    assert open_fds() == before
    assert asyncio.all_tasks() == tasks_before
    assert not tmp_dir.exists()


async def test_the_lab_is_an_async_context_manager() -> None:
    async with Lab("default") as lab:
        assert lab.resolver.startswith("127.53.0.1:")
        clean = lab.server_address("clean.lab") or ""
        page = await asyncio.to_thread(http_get, "127.0.0.1", clean, lab.http_port, "clean.lab")
        assert page.status == 200
    assert not await asyncio.to_thread(Path(lab.ca_file).exists)


async def test_a_bad_scenario_fails_before_anything_listens(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[domain]]\nname = "x.lab"\nscheme = "http"\nbehaviours = ["warp"]\n')
    before = open_fds()
    with pytest.raises(ScenarioError, match="warp"):
        await Lab.start(bad)
    assert open_fds() == before


def test_the_cli_serves_for_a_duration_and_writes_geolocation(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--duration",
            "0.2",
            "--asn-csv",
            str(tmp_path / "a.csv"),
            "--country-csv",
            str(tmp_path / "c.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "127.53.0.1:" in result.output
    assert "http://clean.lab:" in result.output and "https://secure.lab:" in result.output
    assert "isp-a" in result.output and "AS64501" in result.output
    assert (tmp_path / "a.csv").read_text().count("\n") == 6


def test_the_cli_reports_a_bad_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--scenario", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_the_http_fingerprint_matches_the_lab_blockpage() -> None:
    with (DATA / "fingerprints_http.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == OONI_HEADER
        rows = {r["name"]: r for r in reader}
    row = rows["gatewatch_lab_blockpage"]
    assert (row["scope"], row["location_found"], row["pattern_type"]) == ("nat", "body", "contains")
    assert row["pattern"] == BLOCKPAGE_MARKER
    assert row["pattern"] in blockpage("blockpage.lab")


def test_the_dns_fingerprint_matches_the_bogus_answer() -> None:
    with (DATA / "fingerprints_dns.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == OONI_HEADER
        rows = {r["name"]: r for r in reader}
    row = rows["gatewatch_lab_bogus_ip"]
    assert (row["scope"], row["location_found"], row["pattern_type"]) == ("nat", "dns", "full")
    assert row["pattern"] == BOGUS_ADDRESS


async def test_a_block_is_switched_on_and_off_while_the_lab_runs(tmp_path: Path) -> None:
    """The time-to-alert benchmark switches a gateway block on at a random moment: DNS, TLS and HTTP
    behaviours follow the switch on the next query or connection; a blackhole cannot be switched."""
    from gatewatch.lab.pages import BLOCKPAGE_STATUS
    from gatewatch.probes.web import measure

    path = tmp_path / "switched.toml"
    path.write_text(
        '[[domain]]\nname = "later.lab"\nscheme = ["http", "https"]\nbehaviours = ["http_blockpage"]\n'
        'blocking = "http-diff"\nswitched_on = false\n'
        '[[domain]]\nname = "sni.lab"\nscheme = "https"\nbehaviours = ["tls_reset"]\n'
        'blocking = "http-failure"\n'
        '[[domain]]\nname = "hole.lab"\nscheme = "http"\nbehaviours = ["blackhole"]\nblocking = "tcp_ip"\n'
    )
    async with await Lab.start(path) as lab:
        url, sni = lab.url("later.lab", "http"), lab.url("sni.lab")

        async def status(target: str) -> object:
            keys = await measure(target, lab.web_config("isp-a"))
            final = keys.requests[-1]
            return final.response.code if final.response is not None else final.failure

        assert await status(url) == 200  # switched off at start: the real page
        lab.switch("later.lab", True)
        assert await status(url) == BLOCKPAGE_STATUS
        assert await status(sni) == "connection_reset"
        lab.switch("sni.lab", False)
        assert await status(sni) == 200
        with pytest.raises(ValueError, match="blackhole"):
            lab.switch("hole.lab", True)

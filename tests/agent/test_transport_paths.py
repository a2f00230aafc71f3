"""How the agent reaches its collector, end to end on loopback: a pass and its uploads through the test
suite's SOCKS5 and HTTP CONNECT proxies (tests/agent/proxies.py) to the contract collector, with the real
probe measuring a loopback site directly; Tor mode's circuit per upload; fallbacks and what `status` says.

The collector's name (``collector.test``) is known to the test proxies only: no resolver on this machine
can answer for it, so a pass that completes through ``socks5h`` shows that only the proxy resolved it, and
every name the agent looks up itself is recorded as well."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatewatch.agent.addresses import CollectorAddress, Fallbacks
from gatewatch.agent.cli import app
from gatewatch.agent.cli_test_list import load_test_list
from gatewatch.agent.collector_api import (
    ApiFailure,
    fetch_test_list,
    make_session,
    request_control,
    request_controls,
    where_am_i,
)
from gatewatch.agent.paths import DataPaths
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.run_records import RunOptions
from gatewatch.agent.runner import run_pass
from gatewatch.agent.settings import AgentSettings, SettingsError, load_settings
from gatewatch.agent.testlists import TestListEntry
from gatewatch.agent.upload import RetryPolicy, Uploader
from gatewatch.core.wire import ControlRequest

from .collector_contract import ContractCollector
from .proxies import ConnectProxy, Socks5Server
from .test_cli import _contract_collector, _init

COLLECTOR_NAME = "collector.test"
ONION = "gatewatch" + "a" * 47 + ".onion"
ONE_ROUND = RetryPolicy(max_attempts=1)


@pytest.fixture
async def collector(aiohttp_server):
    contract = ContractCollector(
        probe_ip="127.0.0.1", test_list="url,category_code\nhttp://a.example/,NEWS\n"
    )
    server = await aiohttp_server(contract.app(), host="127.0.0.1")
    contract.port = server.port  # type: ignore[attr-defined]
    return contract


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name this process asks the system resolver for (both the blocking and the loop's call)."""
    names: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        names.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return names


@pytest.fixture
async def site():
    """A web site on 127.0.0.2 the real probe measures; it records who connected."""
    peers: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = b"<html><title>site</title></html>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.2:{port}/", peers
    server.close()
    await server.wait_closed()


def _via(proxy_url: str, collector, **kw) -> CollectorAddress:
    return CollectorAddress(url=f"http://{COLLECTOR_NAME}:{collector.port}/", proxy=proxy_url, **kw)


def _direct(collector) -> CollectorAddress:
    return CollectorAddress(url=f"http://127.0.0.1:{collector.port}/", proxy="direct")


async def test_a_pass_goes_through_socks5h_and_its_probes_do_not(
    collector, site, resolved, tmp_path, signing_key
) -> None:
    url, site_peers = site
    async with Socks5Server(names={COLLECTOR_NAME: "127.0.0.1"}) as proxy:
        first = _via(f"socks5h://127.0.0.1:{proxy.port}", collector)
        options = RunOptions(
            addresses=(first, _direct(collector)),  # the direct one only answers where this machine is
            routable=("127.0.0.0/8",),
            route_probes=("127.0.0.1",),
            upload_retry=ONE_ROUND,
        )
        with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
            summary = await run_pass(
                [TestListEntry(url=url, category_code="NEWS")], options, queue, signing_key
            )
    assert summary.measured == 1 and summary.upload is not None and summary.upload.accepted == 1
    assert len(collector.stored) == 1 and collector.seen_control_requests  # control and upload: by proxy
    # The proxy carried collector calls only, by name; the probe went straight to the site.
    assert proxy.seen and {(s.host, s.address_type) for s in proxy.seen} == {(COLLECTOR_NAME, "name")}
    assert site_peers  # the real probe reached the site directly...
    assert all(s.port == collector.port for s in proxy.seen)  # ...and never through the proxy
    assert COLLECTOR_NAME not in resolved  # the agent never asked a resolver for the collector's name


async def test_with_socks5_the_agent_resolves_and_sends_an_address(collector, resolved) -> None:
    async with Socks5Server() as proxy:
        address = CollectorAddress(
            url=f"http://localhost:{collector.port}/", proxy=f"socks5://127.0.0.1:{proxy.port}"
        )
        async with make_session() as session:
            assert isinstance(await fetch_test_list(session, [address], "XL"), str)
    assert "localhost" in resolved
    assert proxy.seen[0].address_type in ("ipv4", "ipv6")


async def test_test_lists_and_uploads_go_through_an_http_connect_proxy(collector, fill_queue) -> None:
    queue, uids = fill_queue(3)
    async with ConnectProxy(names={COLLECTOR_NAME: "127.0.0.1"}, credentials=("vol", "pw")) as proxy:
        address = _via(f"http://vol:pw@127.0.0.1:{proxy.port}", collector)
        async with make_session() as session:
            listed = await fetch_test_list(session, [address], "XL")
            report = await Uploader(queue, [address], session, policy=ONE_ROUND).upload_pending()
    assert isinstance(listed, str) and "a.example" in listed
    assert report.accepted == 3 and set(collector.stored) == set(uids)
    assert {(s.host, s.username) for s in proxy.seen} == {(COLLECTOR_NAME, "vol")}


async def test_where_am_i_never_asks_through_a_proxy(collector) -> None:
    """Through a proxy the collector sees the proxy's exit: its address is not the one to scrub."""
    async with Socks5Server(names={COLLECTOR_NAME: "127.0.0.1"}) as proxy:
        proxied = _via(f"socks5h://127.0.0.1:{proxy.port}", collector)
        async with make_session() as session:
            alone = await where_am_i(session, [proxied])
            found = await where_am_i(session, [proxied, _direct(collector)])
    assert isinstance(alone, ApiFailure) and "direct or fronted" in str(alone)
    assert not isinstance(found, ApiFailure) and found.probe_cc == "XL"
    assert proxy.seen == []


async def test_tor_mode_gives_each_upload_its_own_credentials(collector, fill_queue) -> None:
    queue, uids = fill_queue(6)
    async with Socks5Server(names={ONION: "127.0.0.1"}, accept_any_credentials=True) as tor:
        settings = AgentSettings(
            tor=True,
            tor_socks=f"127.0.0.1:{tor.port}",
            collectors=[CollectorAddress(url=f"http://{ONION}:{collector.port}/")],
        )
        addresses = settings.collector_addresses()
        assert [a.kind for a in addresses] == ["onion"] and addresses[0].route.isolate
        async with make_session(route=settings.default_route()) as session:
            await fetch_test_list(session, addresses, "XL")  # the session's own circuit
            first = await Uploader(queue, addresses, session, batch_size=2, policy=ONE_ROUND).upload_pending()
            await fetch_test_list(session, addresses, "XL")  # the same circuit as before the uploads
    assert first.accepted == 6 and set(collector.stored) == set(uids)
    credentials = [(s.username, s.password) for s in tor.seen]
    assert all(s.host == ONION and s.address_type == "name" for s in tor.seen)
    upload_credentials = credentials[1:-1]
    assert len(upload_credentials) == 3 == len(set(upload_credentials))  # a circuit per upload request
    assert credentials[0] == credentials[-1] and credentials[0] not in upload_credentials


async def test_a_failing_first_address_falls_back_and_the_attempts_are_kept(collector, fill_queue) -> None:
    queue, uids = fill_queue(2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = CollectorAddress(url=f"http://127.0.0.1:{sock.getsockname()[1]}/")
    async with Socks5Server() as refusing:  # knows no name: refuses the collector's
        blocked = _via(f"socks5h://127.0.0.1:{refusing.port}", collector)
        async with make_session() as session:
            report = await Uploader(queue, [closed, blocked, _direct(collector)], session).upload_pending()
    assert report.accepted == 2 and report.requests == 3
    attempts = (queue.get_meta("collector_attempts") or {})["attempts"]
    assert [(a["kind"], a["outcome"]) for a in attempts] == [
        ("direct", "connection_refused"),
        ("proxy", "proxy_refused: not_allowed"),
        ("direct", "ok"),
    ]
    assert "socks5h://127.0.0.1" in attempts[1]["address"] and "@" not in attempts[1]["address"]


def test_settings_build_the_addresses_in_order_with_their_routes() -> None:
    settings = AgentSettings(
        proxy="socks5h://user:pw@127.0.0.1:1080",
        collectors=[
            {"url": "https://collector.example.org/", "front": "cdn.example.net", "proxy": "direct"},
            {"url": "https://collector.example.org/", "proxy": "http://127.0.0.1:3128"},
        ],
        collector_urls=["https://mirror.example.net/"],
    )
    addresses = settings.collector_addresses()
    assert [a.kind for a in addresses] == ["fronted", "proxy", "proxy"]
    assert [a.first_hop for a in addresses] == ["cdn.example.net", "127.0.0.1", "127.0.0.1"]
    assert addresses[2].route.proxy is not None and addresses[2].route.proxy.scheme == "socks5h"
    assert (
        "pw" not in addresses[2].label and settings.effective_control_url == "https://collector.example.org/"
    )
    tor = settings.with_transport(tor=True)
    assert tor.proxy is None and tor.collector_addresses()[2].label.startswith("mirror.example.net (tor via")
    assert settings.with_transport(upload_delay="0").upload_delay == (0.0, 0.0)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"collector_urls": [f"http://{ONION}/"]}, "reached only through Tor"),
        (
            {"collector_urls": [f"http://{ONION}/"], "proxy": "socks5://127.0.0.1:1"},
            "reached only through Tor",
        ),
        ({"proxy": "ftp://127.0.0.1:21"}, "socks5h://"),
        ({"tor": True, "proxy": "socks5h://127.0.0.1:1"}, "either tor"),
        ({"upload_delay": [60, 5]}, "min <= max"),
        ({"collectors": [{"url": "https://c.example/", "front": "https://cdn/"}]}, "host name only"),
    ],
)
def test_unusable_transport_settings_are_explained(changes: dict, words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        AgentSettings().with_overrides(**changes)


def test_agent_toml_with_tor_and_fallbacks_and_status_shows_the_attempts(tmp_path: Path, fill_queue) -> None:
    runner = CliRunner()
    data = tmp_path / "d"
    _init(data)
    paths = DataPaths.at(data)
    queue, uids = fill_queue(2)
    queue.close()
    (tmp_path / "queue.sqlite3").replace(paths.queue)
    contract = ContractCollector()
    with _contract_collector(contract) as url:
        paths.settings.write_text(
            f'tor = true\ntor_socks = "127.0.0.1:9"\n'  # no Tor here: the onion address fails
            f'[[collectors]]\nurl = "http://{ONION}/"\n'
            f'[[collectors]]\nurl = "{url}/"\nproxy = "direct"\n'
        )
        result = runner.invoke(app, ["upload", "--data-dir", str(data)])
        status = runner.invoke(app, ["status", "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert set(contract.stored) == set(uids)
    attempts = json.loads(status.output)["collector_attempts"]
    assert (attempts[0]["kind"], attempts[0]["outcome"]) == ("onion", "connection_refused")
    assert (attempts[1]["kind"], attempts[1]["outcome"]) == ("direct", "ok")
    assert [a["kind"] for a in json.loads(status.output)["collector_addresses"]] == ["onion", "direct"]
    table = runner.invoke(app, ["status", "--data-dir", str(data)])
    assert "collector attempts" in table.output and "connection_refused" in table.output
    assert "tor via socks5h://127.0.0.1:9" in table.output


async def test_the_passs_test_list_comes_through_the_proxy_and_where_am_i_does_not(collector) -> None:
    async with Socks5Server(names={COLLECTOR_NAME: "127.0.0.1"}) as proxy:
        settings = AgentSettings(
            proxy=f"socks5h://127.0.0.1:{proxy.port}",
            collector_urls=[f"http://{COLLECTOR_NAME}:{collector.port}/"],
        )
        options = RunOptions(addresses=tuple(settings.collector_addresses()), route=settings.default_route())
        test_list = await load_test_list(settings, options, [], [])
    assert [entry.url for entry in test_list.entries] == ["http://a.example/"]
    # The only call made was the list's (the country is withheld: no unproxied address to ask).
    assert [(s.host, s.port) for s in proxy.seen] == [(COLLECTOR_NAME, collector.port)]


async def test_controls_fall_back_and_stay_with_the_address_that_answered(collector) -> None:
    collector.control_status = 200
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = CollectorAddress(url=f"http://127.0.0.1:{sock.getsockname()[1]}/")
    fallbacks = Fallbacks([closed, _direct(collector)])
    asked = [ControlRequest(input=f"http://site{i}.example/", addrs=[]) for i in range(3)]
    async with make_session() as session:
        first = await request_controls(session, fallbacks, asked[:2])
        second = await request_control(session, fallbacks, asked[2])
        failures = [(a["kind"], a["outcome"]) for a in session.attempts.as_records()]
    assert isinstance(first, list) and not any(isinstance(answer, ApiFailure) for answer in first)
    assert not isinstance(second, ApiFailure)
    assert len(collector.seen_control_requests) == 3
    assert failures == [("direct", "connection_refused")]  # the closed address was tried once only


def test_a_bad_proxy_or_an_onion_without_tor_on_the_command_line_is_explained(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _init(data)
    runner = CliRunner()
    bad = runner.invoke(app, ["upload", "--data-dir", str(data), "--proxy", "socks4://127.0.0.1:1080"])
    assert bad.exit_code == 2 and "socks5h://" in bad.output
    onion = runner.invoke(app, ["upload", "--data-dir", str(data), "--collector", f"http://{ONION}/"])
    assert onion.exit_code == 2 and "only through Tor" in onion.output


def test_init_with_tor_writes_settings_that_route_through_tor(tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = CliRunner().invoke(
        app, ["init", "--yes", "--tor", "--data-dir", str(data), "--collector", f"http://{ONION}/"]
    )
    assert result.exit_code == 0, result.output
    settings = load_settings(DataPaths.at(data).settings)
    assert settings.tor and [a.kind for a in settings.collector_addresses()] == ["onion"]
    assert settings.upload_delay == (300.0, 3600.0)

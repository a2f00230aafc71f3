"""Lab-wide settings: ``latency_ms`` (every server answers a round trip late) and ``wildcard`` (unlisted names
are clean sites, so a real test list can run through the lab).

Timings here are lower bounds only: a delay the lab promises can be checked without racing the machine
(a slow machine only makes a step later), while how fast the lab is belongs to bench/.
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from typer.testing import CliRunner

from gatewatch.lab import Lab, ScenarioError
from gatewatch.lab.cli import app
from gatewatch.lab.networks import INJECTED_ADDRESS
from gatewatch.lab.resolver import decide
from gatewatch.lab.scenario import load_scenario, parse_scenario
from gatewatch.lab.sites import respond
from gatewatch.lab.wildcard import WILDCARD_SITES, is_wildcard_name, wildcard_address
from gatewatch.probes.web import measure

from .conftest import connect, http_get, https_get, tls_client_context, udp_replies

pytestmark = pytest.mark.lab

LATENCY_MS = 60
LATENCY = LATENCY_MS / 1000
SOURCES = {"clean": "127.0.0.1", "isp-a": "127.65.0.10", "isp-b": "127.66.0.10", "isp-c": "127.67.0.10"}
DOMAIN = '[[domain]]\nname = "x.lab"\nscheme = "http"\n'


@pytest.fixture
async def wild_lab() -> AsyncIterator[Lab]:
    async with Lab(wildcard=True) as lab:
        yield lab


@pytest.fixture
async def slow_lab() -> AsyncIterator[Lab]:
    async with Lab(latency_ms=LATENCY_MS) as lab:
        yield lab


async def ask(
    lab: Lab, network: str, name: str, rdtype: str = "A", *, tcp: bool = False
) -> dns.message.Message:
    host, port = lab.resolver.rsplit(":", 1)
    query = dns.message.make_query(name, rdtype)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(query, host, port=int(port), source=SOURCES[network], timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.address for rrset in reply.answer for rr in rrset]


def peer_certificate(source: str, address: str, port: int, server_name: str, ca_file: str) -> bytes:
    """The DER certificate the lab presents for ``server_name``, after validating it against the lab CA."""
    with (
        connect(source, address, port) as raw,
        tls_client_context(ca_file).wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


# ----------------------------------------------------------------------------------- scenario settings


def test_the_settings_default_to_todays_lab() -> None:
    scenario = load_scenario("default")
    assert (scenario.latency_ms, scenario.wildcard, scenario.latency) == (0.0, False, 0.0)
    assert Lab().wildcard_addresses == ()


def test_the_settings_are_read_from_the_scenario_and_can_be_overridden() -> None:
    scenario = parse_scenario("latency_ms = 25\nwildcard = true\n" + DOMAIN, origin="s.toml")
    assert (scenario.latency_ms, scenario.wildcard, scenario.latency) == (25.0, True, 0.025)
    changed = scenario.with_settings(latency_ms=0, wildcard=False)
    assert (changed.latency_ms, changed.wildcard) == (0.0, False)
    assert scenario.with_settings() == scenario  # None keeps the scenario's own
    lab = Lab(scenario, latency_ms=5)
    assert (lab.scenario.latency_ms, lab.latency) == (5.0, 0.005)
    assert len(lab.wildcard_addresses) == WILDCARD_SITES
    assert lab.server_address("x.lab") not in lab.wildcard_addresses


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("latency_ms = -1", "outside"),
        ("latency_ms = 5000", "outside"),
        ("latency_ms = nan", "outside"),
        ('latency_ms = "fast"', "number of milliseconds"),
        ("latency_ms = true", "number of milliseconds"),
        ('wildcard = "yes"', "true or false"),
    ],
)
def test_bad_settings_are_rejected(setting: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(f"{setting}\n{DOMAIN}", origin="bad.toml")


def test_a_bad_override_is_rejected_too() -> None:
    with pytest.raises(ScenarioError, match="outside"):
        Lab(latency_ms=-5)
    with pytest.raises(ScenarioError, match="true or false"):
        Lab(wildcard=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- latency


async def test_each_step_of_a_measurement_waits_a_round_trip(slow_lab: Lab) -> None:
    config = slow_lab.web_config("isp-a")
    secure = await measure(slow_lab.url("secure.lab"), config)
    assert [r.failure for r in secure.requests] == [None]
    assert all(q.t - q.t0 >= LATENCY for q in secure.queries)
    # The kernel completes the TCP handshake at once; its round trip is paid before the ServerHello.
    (handshake,) = secure.tls_handshakes
    assert handshake.failure is None and handshake.t - handshake.t0 >= 2 * LATENCY
    assert secure.requests[0].t - secure.requests[0].t0 >= LATENCY
    clean = await measure(slow_lab.url("clean.lab"), config)
    # Cleartext: the connection's round trip and the request's, both before the response.
    assert clean.requests[0].failure is None and clean.requests[0].t - clean.requests[0].t0 >= 2 * LATENCY


async def test_dns_over_tcp_pays_the_connection_and_the_query(slow_lab: Lab) -> None:
    started = time.monotonic()
    reply = await ask(slow_lab, "isp-b", "clean.lab", tcp=True)
    assert time.monotonic() - started >= 2 * LATENCY
    assert addresses(reply) == [slow_lab.server_address("clean.lab")]


async def test_the_injector_keeps_its_head_start_under_latency(slow_lab: Lab) -> None:
    query = dns.message.make_query("injected.lab", "A")
    started = time.monotonic()
    replies = await asyncio.to_thread(udp_replies, SOURCES["isp-a"], slow_lab.resolver, query, LATENCY + 0.3)
    assert time.monotonic() - started >= LATENCY
    assert [addresses(dns.message.from_wire(r)) for r in replies] == [
        [INJECTED_ADDRESS],
        [slow_lab.server_address("injected.lab")],
    ]


# ------------------------------------------------------------------------------------------ wildcard


def test_wildcard_names_and_addresses() -> None:
    assert is_wildcard_name("www.example.org") and is_wildcard_name("a_b.example.com.")
    assert is_wildcard_name("xn--80ak6aa92e.com")
    for name in ("localhost", "1.1.1.1", "", "bad..name.org", "x" * 64 + ".org", "a b.org"):
        assert not is_wildcard_name(name), name
    pool = ("127.80.0.30", "127.80.0.31", "127.80.0.32")
    assert wildcard_address("www.example.org", pool) == wildcard_address("WWW.Example.org.", pool)
    assert len({wildcard_address(f"site{i}.example", pool) for i in range(30)}) == len(pool)
    with pytest.raises(ValueError):
        wildcard_address("www.example.org", ())


def test_decide_and_respond_serve_unlisted_names_only_with_the_wildcard() -> None:
    scenario = load_scenario("default")
    servers = {"clean.lab": "127.80.0.10"}
    pool = ("127.80.0.30", "127.80.0.31")
    a, aaaa = dns.rdatatype.A, dns.rdatatype.AAAA
    assert decide(scenario, servers, "news.example.", a, "127.65.0.10").rcode == dns.rcode.NXDOMAIN
    found = decide(scenario, servers, "news.example.", a, "127.65.0.10", pool)
    assert (found.rcode, found.addresses, found.injected) == (dns.rcode.NOERROR, (found.addresses[0],), None)
    assert found.addresses[0] in pool
    assert decide(scenario, servers, "news.example.", aaaa, "127.65.0.10", pool).addresses == ()
    # The scenario's own names keep their meaning: a domain that does not exist is still NXDOMAIN.
    assert decide(scenario, servers, "nonexistent.lab.", a, "127.0.0.1", pool).rcode == dns.rcode.NXDOMAIN

    def status(host: str, method: str = "GET", *, wildcard: bool = True) -> int:
        return respond(scenario, host, method, "127.65.0.10", cleartext=True, wildcard=wildcard).status

    assert status("news.example") == 200 and status("news.example", wildcard=False) == 404
    assert status("news.example", "POST") == 405
    assert status("nonexistent.lab") == 404 and status("localhost") == 404
    assert status("127.80.0.30") == 200 and status("127.80.0.30", wildcard=False) == 404
    assert status("blockpage.lab") == 403  # the censor still stands in front of the scenario's sites
    page = respond(scenario, "News.Example.", "GET", "127.0.0.1", cleartext=False, wildcard=True)
    assert b"<title>news.example - a gatewatch lab site</title>" in page.body


@pytest.mark.parametrize("network", SOURCES)
async def test_unlisted_names_resolve_to_a_wildcard_site(wild_lab: Lab, network: str) -> None:
    names = [f"site{i}.example.org" for i in range(12)]
    for name in names:
        reply = await ask(wild_lab, network, name)
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == [wild_lab.server_address(name)]
        assert addresses(reply)[0] in wild_lab.wildcard_addresses
    assert len({wild_lab.server_address(n) for n in names}) > 1  # spread over the pool
    aaaa = await ask(wild_lab, network, names[0], "AAAA")
    assert (aaaa.rcode(), aaaa.answer) == (dns.rcode.NOERROR, [])
    assert addresses(await ask(wild_lab, network, "clean.lab")) == [wild_lab.server_address("clean.lab")]
    assert (await ask(wild_lab, network, "nonexistent.lab")).rcode() == dns.rcode.NXDOMAIN


async def test_the_censor_still_acts_on_scenario_names_beside_the_wildcard(wild_lab: Lab) -> None:
    assert (await ask(wild_lab, "isp-a", "nxdomain.lab")).rcode() == dns.rcode.NXDOMAIN
    address = wild_lab.server_address("blockpage.lab") or ""
    page = await asyncio.to_thread(http_get, SOURCES["isp-b"], address, wild_lab.http_port, "blockpage.lab")
    assert page.status == 403
    assert wild_lab.expected("blockpage.lab", "isp-b") == "http-diff"
    assert wild_lab.expected("https://www.example.org/", "isp-b") is False


async def test_a_wildcard_site_serves_any_name_a_clean_page_over_http(wild_lab: Lab) -> None:
    name = "www.example.org"
    address = wild_lab.server_address(name) or ""
    pages = [
        await asyncio.to_thread(http_get, source, address, wild_lab.http_port, name)
        for source in SOURCES.values()
    ]
    assert {p.status for p in pages} == {200} and len({p.body for p in pages}) == 1
    assert b"<title>www.example.org - a gatewatch lab site</title>" in pages[0].body
    other = await asyncio.to_thread(http_get, "127.0.0.1", address, wild_lab.http_port, "other.example.net")
    assert other.status == 200 and other.body != pages[0].body


async def test_certificates_are_issued_on_demand_for_the_sni_and_reused(wild_lab: Lab) -> None:
    port, ca = wild_lab.https_port, wild_lab.ca_file
    first_name, second_name = "news.example.net", "mail.example.com"
    address = wild_lab.server_address(first_name) or ""
    # Validation (chain to the lab CA and the host name) is done by ssl itself in these clients.
    first = await asyncio.to_thread(peer_certificate, "127.65.0.10", address, port, first_name, ca)
    again = await asyncio.to_thread(peer_certificate, "127.0.0.1", address, port, first_name, ca)
    second = await asyncio.to_thread(peer_certificate, "127.65.0.10", address, port, second_name, ca)
    assert first == again  # cached, not issued twice
    assert second != first
    page = await asyncio.to_thread(https_get, "127.66.0.10", address, port, first_name, ca)
    assert page.status == 200 and b"news.example.net - a gatewatch lab site" in page.body
    # No SNI (an IP-literal URL): the wildcard address's own certificate, valid for that address.
    await asyncio.to_thread(peer_certificate, "127.0.0.1", address, port, address, ca)


async def test_certificates_issued_ahead_are_the_ones_served(wild_lab: Lab) -> None:
    name = "ahead.example.org"
    # Scenario names keep their own certificates, IP literals and garbage get none, repeats count once.
    assert wild_lab.issue_certificates([name, "AHEAD.example.org.", "secure.lab", "1.2.3.4", "-bad-"]) == 1
    assert wild_lab.issue_certificates([name]) == 0
    address = wild_lab.server_address(name) or ""
    served = await asyncio.to_thread(peer_certificate, "127.65.0.10", address, wild_lab.https_port, name,
                                     wild_lab.ca_file)  # fmt: skip
    assert served == await asyncio.to_thread(
        peer_certificate, "127.0.0.1", address, wild_lab.https_port, name, wild_lab.ca_file
    )


async def test_a_scenario_name_keeps_its_own_certificate_on_a_wildcard_lab(wild_lab: Lab) -> None:
    address = wild_lab.server_address("secure.lab") or ""
    page = await asyncio.to_thread(
        https_get, "127.65.0.10", address, wild_lab.https_port, "secure.lab", wild_lab.ca_file
    )
    assert page.status == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        # An unusable SNI gets the address's certificate, which is not valid for that name.
        await asyncio.to_thread(
            peer_certificate, "127.0.0.1", address, wild_lab.https_port, "nosuch", wild_lab.ca_file
        )


def test_rewrite_url_points_real_urls_at_the_lab_ports() -> None:
    lab = Lab(wildcard=True)
    lab.http_port, lab.https_port = 18080, 18443  # not started: rewriting needs only the ports
    assert lab.rewrite_url("http://www.example.org/a b?q=1#top") == "http://www.example.org:18080/a b?q=1#top"
    assert lab.rewrite_url("HTTPS://Example.com:8443") == "https://example.com:18443"
    assert lab.rewrite_url("http://127.80.0.10/") == "http://127.80.0.10:18080/"
    # Addresses outside the lab never survive a rewrite: they become a wildcard site.
    for literal in ("1.1.1.1", "[2606:4700::1111]", "10.0.0.1"):
        host = urlsplit(lab.rewrite_url(f"https://{literal}/dns-query?dns=x")).hostname
        assert host in lab.wildcard_addresses, literal
    for bad in ("ftp://example.org/", "http:///path", "example.org"):
        with pytest.raises(ValueError):
            lab.rewrite_url(bad)
    with pytest.raises(ValueError, match="outside the lab"):
        Lab().rewrite_url("https://1.1.1.1/")


async def test_the_probe_measures_real_urls_through_the_wildcard(wild_lab: Lab) -> None:
    config = wild_lab.web_config("isp-a")
    urls = ["http://www.example.org/news?id=7", "https://www.example.com/", "https://1.1.1.1/dns-query?x=1"]
    for url in urls:
        lab_url = wild_lab.rewrite_url(url)
        keys = await measure(lab_url, config)
        assert [r.failure for r in keys.requests] == [None], url
        response = keys.requests[0].response
        assert response is not None and response.code == 200
        assert all(h.validated for h in keys.tls_handshakes)
        assert len(keys.tls_handshakes) == (1 if url.startswith("https") else 0)
        assert wild_lab.expected(lab_url, "isp-a") is False


async def test_every_url_of_the_real_lists_stays_inside_the_lab(wild_lab: Lab, shared_data: Path) -> None:
    urls: set[str] = set()
    for name in ("kh.csv", "global.csv"):
        with (shared_data / "test-lists" / name).open(encoding="utf-8", newline="") as rows:
            urls |= {row["url"].strip() for row in csv.DictReader(rows) if row["url"].strip()}
    assert len(urls) > 1000
    loopback = ipaddress.ip_network("127.0.0.0/8")
    for url in urls:
        host = urlsplit(wild_lab.rewrite_url(url)).hostname or ""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            assert is_wildcard_name(host), url  # served by a wildcard site, resolved by the lab
            assert ipaddress.ip_address(wild_lab.server_address(host) or "") in loopback
        else:
            assert ip in loopback, url


def test_the_cli_serves_with_latency_and_wildcard() -> None:
    result = CliRunner().invoke(app, ["serve", "--duration", "0.1", "--latency-ms", "7", "--wildcard"])
    assert result.exit_code == 0, result.output
    assert "7 ms per round trip" in result.output
    assert "unlisted names are clean sites" in result.output
    plain = CliRunner().invoke(app, ["serve", "--duration", "0.1"])
    assert "0 ms per round trip" in plain.output and "unlisted names" not in plain.output


def test_nothing_here_leaves_loopback() -> None:
    # The wildcard pool is carved from the lab's hosting range, like every other lab server.
    lab = Lab(wildcard=True)
    assert all(
        ipaddress.ip_address(a) in ipaddress.ip_network("127.80.0.0/16") for a in lab.wildcard_addresses
    )

"""The lab's DNS path seen from each network, with a raw dnspython client bound to the network's source."""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from gatewatch.lab import Lab
from gatewatch.lab.networks import BOGUS_ADDRESS, INJECTED_ADDRESS

from .conftest import udp_replies

pytestmark = pytest.mark.lab

NETWORKS = ("clean", "isp-a", "isp-b")
CENSORED = ("isp-a", "isp-b")


async def ask(
    lab: Lab, network: str, name: str, rdtype: str = "A", *, tcp: bool = False
) -> dns.message.Message:
    host, port = lab.resolver.rsplit(":", 1)
    query = dns.message.make_query(name, rdtype)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(query, host, port=int(port), source=lab.networks[network].source_address, timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.address for rrset in reply.answer for rr in rrset]


@pytest.mark.parametrize("network", NETWORKS)
async def test_a_clean_name_resolves_to_its_server_everywhere(lab: Lab, network: str) -> None:
    reply = await ask(lab, network, "clean.lab")
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == [lab.server_address("clean.lab")]
    aaaa = await ask(lab, network, "clean.lab", "AAAA")
    assert (aaaa.rcode(), aaaa.answer) == (dns.rcode.NOERROR, [])


@pytest.mark.parametrize("network", NETWORKS)
async def test_unknown_and_nonexistent_names_are_nxdomain_for_everyone(lab: Lab, network: str) -> None:
    for name in ("nonexistent.lab", "never-heard-of.lab", "www.clean.lab"):
        assert (await ask(lab, network, name)).rcode() == dns.rcode.NXDOMAIN, name


async def test_resolver_nxdomain_only_in_censored_networks(lab: Lab) -> None:
    for network in CENSORED:
        for tcp in (False, True):
            assert (await ask(lab, network, "nxdomain.lab", tcp=tcp)).rcode() == dns.rcode.NXDOMAIN
    clean = await ask(lab, "clean", "nxdomain.lab")
    assert addresses(clean) == [lab.server_address("nxdomain.lab")]


async def test_resolver_bogus_ip_only_in_censored_networks(lab: Lab) -> None:
    for network in CENSORED:
        assert addresses(await ask(lab, network, "bogus.lab")) == [BOGUS_ADDRESS]
        assert addresses(await ask(lab, network, "bogus.lab", tcp=True)) == [BOGUS_ADDRESS]
    assert addresses(await ask(lab, "clean", "bogus.lab")) == [lab.server_address("bogus.lab")]


@pytest.mark.parametrize("network", CENSORED)
async def test_injection_yields_a_forged_reply_then_the_real_one(lab: Lab, network: str) -> None:
    query = dns.message.make_query("injected.lab", "A")
    source = lab.networks[network].source_address
    wires = await asyncio.to_thread(udp_replies, source, lab.resolver, query)
    replies = [dns.message.from_wire(w) for w in wires]
    assert [addresses(r) for r in replies] == [[INJECTED_ADDRESS], [lab.server_address("injected.lab")]]
    assert all(r.id == query.id for r in replies)  # both answer the same query


async def test_no_injection_for_the_clean_vantage_or_over_tcp(lab: Lab) -> None:
    query = dns.message.make_query("injected.lab", "A")
    wires = await asyncio.to_thread(udp_replies, "127.0.0.1", lab.resolver, query)
    assert [addresses(dns.message.from_wire(w)) for w in wires] == [[lab.server_address("injected.lab")]]
    over_tcp = await ask(lab, "isp-a", "injected.lab", tcp=True)
    assert addresses(over_tcp) == [lab.server_address("injected.lab")]


@pytest.mark.parametrize("network", NETWORKS)
async def test_whoami_answers_the_querying_source_address(lab: Lab, network: str) -> None:
    reply = await ask(lab, network, "whoami.echo.lab")
    assert addresses(reply) == [lab.networks[network].source_address]


async def test_whoami_exists_only_under_an_echo_domain(lab: Lab) -> None:
    assert (await ask(lab, "isp-a", "whoami.clean.lab")).rcode() == dns.rcode.NXDOMAIN


async def test_garbage_datagrams_are_ignored_and_the_resolver_keeps_serving(lab: Lab) -> None:
    host, port = lab.resolver.rsplit(":", 1)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.65.0.10", 0), remote_addr=(host, int(port))
    )
    try:
        transport.sendto(b"\x00\x01garbage")
    finally:
        transport.close()
    assert addresses(await ask(lab, "isp-a", "clean.lab")) == [lab.server_address("clean.lab")]

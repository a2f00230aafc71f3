"""The agent's packet-level trace against the lab's on-path censor: what it records is what was forged, and
the hop it finds is where the gateway is, from every ISP (root only)."""

from __future__ import annotations

import pytest

from gatewatch.lab.netns.scenario import DNS_INJECTED_ADDRESS, SIGNATURES, VOLUNTEER_NETWORKS
from gatewatch.lab.netns.topology import INTL_DNS, INTL_WEB

from .conftest import python_in

pytestmark = [pytest.mark.netns]

TRACE = """
import asyncio, sys
from gatewatch.probes.packet_trace import PacketTraceConfig, trace_flow
config = PacketTraceConfig(control_hostname="clean.netlab", hop_wait=0.25, listen=0.4, max_hops=8)
print(asyncio.run(trace_flow(sys.argv[1], sys.argv[2], sys.argv[3], config)).model_dump_json())
"""


def _expected_arrival_ttl(lab, network: str, initial: int) -> int:
    # The injector is the gateway: its packet crosses the routers between it and the volunteer.
    return initial - (lab.gateway_hop(network) - 1)


@pytest.mark.parametrize("network", sorted(VOLUNTEER_NETWORKS))
def test_rst_signature_is_recorded_as_forged_and_the_injecting_hop_is_the_gateway(netns_lab, network) -> None:
    volunteer = VOLUNTEER_NETWORKS[network][0]
    trace = python_in(netns_lab, volunteer, TRACE, "tls", "sni-reset.netlab", INTL_WEB)
    signature = SIGNATURES["tls_reset"]
    resets = [p for p in trace["packets"] if "R" in p["tcp_flags"]]
    assert len(resets) == 1
    assert resets[0]["ip_id"] == signature.ip_id
    assert resets[0]["df"] is signature.df
    assert resets[0]["tcp_window"] == signature.window
    assert resets[0]["ttl"] == _expected_arrival_ttl(netns_lab, network, signature.ttl)
    assert resets[0]["payload_size"] == 0
    assert trace["injection_hop"] == netns_lab.gateway_hop(network)
    # The control name reaches the server itself, one hop past the gateway.
    assert trace["control_answer_hop"] == netns_lab.gateway_hop(network) + 1


def test_dns_injection_shows_two_replies_the_forged_one_first(netns_lab) -> None:
    trace = python_in(netns_lab, "vol-a", TRACE, "dns", "injected.netlab", INTL_DNS)
    forged, real = trace["packets"]
    signature = SIGNATURES["dns_injection"]
    assert forged["dns_answers"] == [DNS_INJECTED_ADDRESS] and real["dns_answers"] == [INTL_WEB]
    assert (forged["ip_id"], forged["df"]) == (signature.ip_id, signature.df)
    assert forged["ttl"] == _expected_arrival_ttl(netns_lab, "isp-a", signature.ttl)
    assert forged["delay"] < real["delay"]
    assert real["ip_id"] != signature.ip_id
    assert trace["injection_hop"] == netns_lab.gateway_hop("isp-a")


def test_blockpage_injection_is_recorded_with_its_signature(netns_lab) -> None:
    trace = python_in(netns_lab, "vol-b", TRACE, "http", "blockpage.netlab", INTL_WEB)
    signature = SIGNATURES["http_blockpage"]
    injected = [p for p in trace["packets"] if p["ip_id"] == signature.ip_id]
    assert [p["tcp_flags"] for p in injected] == ["PA", "FA"]
    assert all(p["tcp_window"] == signature.window and p["df"] is signature.df for p in injected)
    assert injected[0]["payload_size"] > 0
    # The real server's answer still arrives, later, with other header values.
    assert any(p["payload_size"] > 0 and p["ip_id"] != signature.ip_id for p in trace["packets"])
    assert trace["injection_hop"] == netns_lab.gateway_hop("isp-b")

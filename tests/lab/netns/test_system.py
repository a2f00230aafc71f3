"""The unmodified agent and collector inside the namespace lab, through to /api/v1/interference: the ISP's
resolver block is attributed `isp`, every gateway block `gateway`, and the trace step localised the
gateway from every ISP (root only)."""

from __future__ import annotations

import pytest

from gatewatch.lab.netns.scenario import NETNS_SITES, VOLUNTEER_NETWORKS, site

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def system_run(netns_lab, tmp_path_factory):
    from gatewatch.lab.netns.system import run_netns_system

    return run_netns_system(netns_lab, tmp_path_factory.mktemp("system"))


def test_every_censored_site_is_attributed_to_where_it_is_censored(system_run) -> None:
    scopes = {row["domain"]: row["scope"] for row in system_run.interference}
    expected = {s.name: s.scope for s in NETNS_SITES if s.scope != "none"}
    assert scopes == expected, system_run.agent_logs
    assert scopes["isp-blocked.netlab"] == "isp"


def test_the_collectors_verdicts_match_the_ground_truth_in_every_network(system_run) -> None:
    asn_network = {asn: network for network, (_, _, asn) in VOLUNTEER_NETWORKS.items()}
    seen = {(asn_network[row["probe_asn"]], row["input"]): row["blocking"] for row in system_run.measurements}
    expected = {(n, s.url): s.expected_blocking(n) for n in VOLUNTEER_NETWORKS for s in NETNS_SITES}
    assert seen == expected


def test_the_uploaded_traces_put_the_injector_at_the_gateway_from_every_isp(netns_lab, system_run) -> None:
    asn_network = {asn: network for network, (_, _, asn) in VOLUNTEER_NETWORKS.items()}
    for measurement in system_run.exported:
        network = asn_network[measurement["probe_asn"]]
        traces = measurement["test_keys"]["packet_traces"]
        ground = site(measurement["input"].split("/")[2])
        injected_here = ground.censor == "gateway" and ground.technique != "ip_blackhole"
        if injected_here:
            assert [t["injection_hop"] for t in traces] == [netns_lab.gateway_hop(network)], measurement[
                "input"
            ]
        elif ground.expected_blocking(network):  # the ISP's own resolver, or a blackhole: no injected packet
            assert all(t["injection_hop"] is None for t in traces)
        else:
            assert traces == []


def test_the_interference_api_shows_the_packet_evidence(system_run) -> None:
    evidence = {row["domain"]: row["packet_evidence"] for row in system_run.interference}
    for name in ("injected.netlab", "sni-reset.netlab", "blockpage.netlab"):
        assert evidence[name]["rule_id"] == "packet.gateway.same_injector", evidence[name]
        assert evidence[name]["supports"] == "gateway" and evidence[name]["networks_located"] == 2
    # The censor races the originals, which reach the server (its ACK comes back beside the injection);
    # the DNS trace goes to the web server's address, which never answers DNS: not shown either way.
    for name, on_path in (("sni-reset.netlab", True), ("blockpage.netlab", True), ("injected.netlab", None)):
        sightings = evidence[name]["sightings"]
        assert [(s["on_path"], s["ttl_copying"]) for s in sightings] == [(on_path, False)] * 2, name
    # The ISP's own resolver answers itself: traced, but no injector on the path.
    assert evidence["isp-blocked.netlab"]["rule_id"] == "packet.no_injector"
    assert evidence["blackholed.netlab"] is None  # a blackhole has no injected packet to trace


def test_the_demo_finds_no_difference_from_the_ground_truth(system_run) -> None:
    from dataclasses import replace

    from gatewatch.lab.netns.demo import differences

    assert differences(system_run) == []
    # ... and it would say so if the ISP block were attributed to the gateway.
    wrong = [
        {**row, "scope": "gateway"} if row["domain"] == "isp-blocked.netlab" else row
        for row in system_run.interference
    ]
    assert differences(replace(system_run, interference=wrong)) == [
        "isp-blocked.netlab: scope gateway, expected isp"
    ]

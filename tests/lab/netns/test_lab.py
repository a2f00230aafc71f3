"""The namespace lab's censors, seen by the unmodified probes from inside each volunteer network (root only).

Each check is one program run in a volunteer's namespace (``ip netns exec``), exactly as the agent runs.
"""

from __future__ import annotations

import pytest

from gatewatch.lab.netns.scenario import BLOCKPAGE_BODY, DNS_INJECTED_ADDRESS, NETNS_SITES, VOLUNTEER_NETWORKS
from gatewatch.lab.netns.topology import INTL_DNS, INTL_WEB

from .conftest import python_in

pytestmark = [pytest.mark.netns]

# Every scenario URL measured by the probes at once, through the given resolver; one JSON summary per URL.
MEASURE_ALL = """
import asyncio, json, sys
from gatewatch.probes.config import DNSConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.web import measure
resolver, ca_file, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
config = WebConfig(
    dns=DNSConfig(resolver=resolver or None, routable=("10.77.0.0/16",), timeout=2.0, linger=0.3),
    tcp=TCPConfig(timeout=1.5), tls=TLSConfig(ca_file=ca_file, timeout=2.0),
)
async def one(url):
    keys = await measure(url, config)
    a = [q for q in keys.queries if q.query_type == "A"]
    return {
        "replies": [[ans.ipv4 for ans in r.answers] for q in a for r in q.replies],
        "rcode": a[0].rcode if a else None,
        "tcp": [(c.ip, c.failure) for c in keys.tcp_connect],
        "tls": [h.failure for h in keys.tls_handshakes],
        "body": [r.response.body if r.response else r.failure for r in keys.requests],
    }
async def main():
    results = await asyncio.gather(*(one(u) for u in urls))
    print(json.dumps(dict(zip(urls, results))))
asyncio.run(main())
"""


def _measure(lab, role: str, resolver: str) -> dict:
    return python_in(lab, role, MEASURE_ALL, resolver, lab.ca_file, *(site.url for site in NETNS_SITES))


def test_the_gateway_injects_dns_before_the_real_reply_and_its_isp_resolvers_are_poisoned(netns_lab) -> None:
    abroad = _measure(netns_lab, "vol-a", INTL_DNS)  # a public resolver abroad: both replies reach the probe
    assert abroad["http://injected.netlab/"]["replies"] == [[DNS_INJECTED_ADDRESS], [INTL_WEB]]
    assert abroad["http://clean.netlab/"]["replies"] == [[INTL_WEB]]
    for network, (volunteer, _, _) in VOLUNTEER_NETWORKS.items():
        # The system resolver (the ISP's, from /etc/netns/<ns>/resolv.conf) took the forged reply.
        seen = _measure(netns_lab, volunteer, "")
        assert seen["http://injected.netlab/"]["replies"] == [[DNS_INJECTED_ADDRESS]], network
        assert seen["http://injected.netlab/"]["tcp"] == []  # a private answer is never visited
        blocked_here = network == "isp-b"
        assert (seen["http://isp-blocked.netlab/"]["rcode"] == "NXDOMAIN") is blocked_here
        assert "<h1>clean.netlab</h1>" in seen["http://clean.netlab/"]["body"][0]
        assert seen["https://secure.netlab/"]["tls"] == [None]
        assert seen["https://sni-reset.netlab/"]["tls"] == ["connection_reset"]
        assert seen["http://blockpage.netlab/"]["body"] == [BLOCKPAGE_BODY.decode()]
        assert [failure for _, failure in seen["http://blackholed.netlab/"]["tcp"]] == [
            "generic_timeout_error"
        ]

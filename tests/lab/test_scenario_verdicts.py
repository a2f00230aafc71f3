"""Done means: the verdict table of the emulated network matches its scenario for every domain and network.

The unmodified probes run through the lab from each censored network; controls come from the clean
vantage; the pure analysis decides. Each censor behaviour is also checked for the exact failure string.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gatewatch.core.vocabulary import TECHNIQUES
from gatewatch.lab import Lab
from gatewatch.lab.demo import DemoRow, measure_lab
from gatewatch.lab.networks import CENSORED_NETWORKS

pytestmark = pytest.mark.lab


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rows() -> AsyncIterator[dict[tuple[str, str], DemoRow]]:
    async with await Lab.start() as lab:
        measured = await measure_lab(lab)
    yield {(r.network, r.domain): r for r in measured}


def test_every_domain_matches_the_scenario(rows: dict[tuple[str, str], DemoRow]) -> None:
    wrong = {
        key: (r.verdict.blocking, r.expected, [lv.rule_id for lv in r.verdict.layers])
        for key, r in rows.items()
        if not r.as_expected
    }
    assert not wrong
    assert {network for network, _ in rows} == {"isp-a", "isp-b", "isp-c"}


def test_clean_domains_show_no_interference(rows: dict[tuple[str, str], DemoRow]) -> None:
    for network in CENSORED_NETWORKS:
        for domain in ("clean.lab", "secure.lab"):
            r = rows[(network, domain)]
            assert r.verdict.blocking is False
            assert r.verdict.accessible is True
            assert all(lv.outcome == "ok" for lv in r.verdict.layers)


def _failures(r: DemoRow) -> dict[str, set[str | None]]:
    k = r.keys
    return {
        "dns": {q.failure for q in k.queries if q.query_type == "A"},
        "tcp": {c.failure for c in k.tcp_connect},
        "tls": {h.failure for h in k.tls_handshakes},
        "http": {t.failure for t in k.requests},
    }


def test_exact_failure_strings(rows: dict[tuple[str, str], DemoRow]) -> None:
    assert _failures(rows[("isp-a", "nxdomain.lab")])["dns"] == {"dns_nxdomain_error"}
    assert _failures(rows[("isp-a", "blackhole.lab")])["tcp"] == {"generic_timeout_error"}
    assert _failures(rows[("isp-a", "sni-reset.lab")])["tls"] == {"connection_reset"}
    assert _failures(rows[("isp-b", "sni-reset.lab")])["tls"] == {"connection_reset"}
    # The ISP-level blockpage is served in isp-a only: isp-b gets the real page.
    isp_b_page = rows[("isp-b", "isp-blockpage.lab")].keys.requests[-1].response
    assert isp_b_page is not None and isp_b_page.code == 200


def test_injection_is_seen_as_two_replies(rows: dict[tuple[str, str], DemoRow]) -> None:
    r = rows[("isp-a", "injected.lab")]
    a_query = next(q for q in r.keys.queries if q.query_type == "A")
    assert len(a_query.replies) >= 2
    assert r.verdict.fingerprint is not None
    assert r.verdict.fingerprint.technique == "dns.injection"
    assert all(ip.startswith("127.99.") for ip in r.verdict.fingerprint.injected_ips)


def test_gateway_interference_has_the_same_fingerprint_in_both_networks(
    rows: dict[tuple[str, str], DemoRow],
) -> None:
    gateway_level = [
        "injected.lab",
        "nxdomain.lab",
        "bogus.lab",
        "sni-reset.lab",
        "blockpage.lab",
        "blackhole.lab",
    ]
    for domain in gateway_level:
        a, b = rows[("isp-a", domain)].verdict.fingerprint, rows[("isp-b", domain)].verdict.fingerprint
        assert a is not None and b is not None, domain
        assert a.key == b.key, domain


def test_blockpage_is_recognised_by_its_fingerprint(rows: dict[tuple[str, str], DemoRow]) -> None:
    fp = rows[("isp-a", "blockpage.lab")].verdict.fingerprint
    assert fp is not None and fp.blockpage_id == "gatewatch_lab_blockpage"


def test_isp_level_block_only_in_its_network(rows: dict[tuple[str, str], DemoRow]) -> None:
    assert rows[("isp-a", "isp-blockpage.lab")].verdict.blocking == "http-diff"
    assert rows[("isp-b", "isp-blockpage.lab")].verdict.blocking is False


def test_no_traffic_to_bogus_private_answer(rows: dict[tuple[str, str], DemoRow]) -> None:
    r = rows[("isp-a", "bogus.lab")]
    assert not any(c.ip == "10.10.34.35" for c in r.keys.tcp_connect)
    assert r.verdict.blocking == "dns"


def test_every_technique_is_in_the_vocabulary(rows: dict[tuple[str, str], DemoRow]) -> None:
    """A technique outside the vocabulary would reach the metrics as `other`."""
    emitted = {r.verdict.fingerprint.technique for r in rows.values() if r.verdict.fingerprint is not None}
    assert emitted, "the scenario blocks something, so some verdict names a technique"
    assert emitted <= set(TECHNIQUES)

"""Attribution per URL, end to end: real agents in both censored networks measure the lab's domains that
the gateway filters on one scheme only (``hostfilter.lab``: the Host header of http://, with a blockpage;
``snifilter.lab``: the SNI of https://, with a reset), over both schemes; the collector's
``GET /api/v1/interference`` and ``/metrics`` show the blocked URL as gateway-level, the other as clean,
and the domain as gateway-level (interfered with when any of its URLs is)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatewatch.lab.lab import Lab

from .conftest import NetworkPass
from .harness import CollectorProcess, http_get

pytestmark = [pytest.mark.lab, pytest.mark.slow]

MIXED = {"hostfilter.lab": ("http", "http.blockpage"), "snifilter.lab": ("https", "tls.reset")}
DEADLINE = 30.0  # the aggregate refreshes its verdicts every few seconds


def rows(collector: CollectorProcess, query: str) -> list[dict[str, Any]]:
    return [
        r
        for r in collector.get_json(f"/api/v1/interference?cc=XL&{query}")["results"]
        if r["domain"] in MIXED
    ]


def scheme_series(collector: CollectorProcess) -> dict[tuple[str, str], tuple[str, str, float]]:
    """(domain, scheme) -> (scope, technique, URLs) of gatewatch_interference_scheme_urls."""
    status, body = http_get(collector.url + "/metrics")
    assert status == 200
    return {
        (s.labels["domain"], s.labels["scheme"]): (s.labels["scope"], s.labels["technique"], s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "gatewatch_interference_scheme_urls" and s.labels["domain"] in MIXED
    }


def test_the_blocked_scheme_is_told_apart_and_the_domain_rolls_up(
    lab: Lab, collector: CollectorProcess, passes: dict[str, NetworkPass]
) -> None:
    for done in passes.values():  # both schemes of both domains were measured and delivered
        assert {lab.url(d, s) for d in MIXED for s in ("http", "https")} <= set(done.uids)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and len(rows(collector, "per=domain")) < len(MIXED):
        time.sleep(0.5)

    per_url = {r["input"]: r for r in rows(collector, "per=url&scope=all")}
    for domain, (blocked, technique) in MIXED.items():
        for scheme in ("http", "https"):
            row = per_url[lab.url(domain, scheme)]
            assert row["domain"] == domain and row["decided_by"] == row["input"]
            if scheme == blocked:
                assert (row["scope"], row["technique"]) == ("gateway", technique), row
                assert (row["networks_affected"], row["networks_measured"], row["urls_affected"]) == (2, 2, 1)
            else:
                assert (row["scope"], row["networks_affected"], row["urls_affected"]) == ("none", 0, 0), row

    per_domain = {r["domain"]: r for r in rows(collector, "per=domain")}
    assert set(per_domain) == set(MIXED)
    for domain, (blocked, technique) in MIXED.items():
        row = per_domain[domain]
        assert row["input"] is None and row["decided_by"] == lab.url(domain, blocked)
        assert (row["scope"], row["technique"], row["urls_measured"], row["urls_affected"]) == (
            "gateway", technique, 2, 1,
        )  # fmt: skip

    # /metrics: the domain's gauge is the roll-up; the scheme series names the blocked scheme only.
    assert scheme_series(collector) == {
        (domain, blocked): ("gateway", technique, 1.0) for domain, (blocked, technique) in MIXED.items()
    }

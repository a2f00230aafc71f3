"""Interference metrics on a fresh registry: values, label bounds, and the cardinality budget at scale."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.metrics_interference import (
    BLOCKING_LABELS,
    MAX_COUNTRIES,
    MAX_DOMAINS_PER_COUNTRY,
    MAX_INTERFERENCE_ROWS,
    MAX_NETWORKS_PER_COUNTRY,
    METRIC_NAMES,
    SERIES_BUDGET,
    TECHNIQUE_LABELS,
    TEST_LABELS,
    URL_SCHEMES,
    register_interference_metrics,
)
from gatewatch.core import vocabulary

from ..conftest import traced_payload

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def row(
    cc: str, asn: str, domain: str, blocked: bool, minutes_ago: float = 5, **extra: object
) -> SimpleNamespace:
    fields = dict(
        measurement_uid=f"{cc}-{asn}-{domain}-{minutes_ago}",
        measurement_start_time=NOW - timedelta(minutes=minutes_ago),
        received_at=NOW,
        probe_cc=cc,
        probe_asn=asn,
        test_name="web",
        input=f"https://{domain}/",
        domain=domain,
        blocking="dns" if blocked else "false",
        anomaly=blocked,
        technique="dns.injection" if blocked else None,
        fingerprint_key=f"fp-{cc}" if blocked else None,
        flags=(),
    )
    fields.update(extra)
    return SimpleNamespace(**fields)


def setup(rows: list[SimpleNamespace]) -> tuple[CollectorRegistry, InterferenceAggregate]:
    registry = CollectorRegistry()
    aggregate = InterferenceAggregate(clock=lambda: NOW, refresh_interval=0.0, refresh_key_budget=10**9)
    register_interference_metrics(registry, aggregate)
    aggregate.add_rows(rows)
    return registry, aggregate


def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]


def test_values_for_a_gateway_and_an_isp_block() -> None:
    rows = [row("XL", "AS1", "gw.example", True), row("XL", "AS2", "gw.example", True)]
    rows += [row("XL", "AS1", "isp.example", True, technique="tls.reset", blocking="http-failure")]
    rows += [row("XL", "AS2", "isp.example", False), row("XL", "AS2", "fine.example", False, 3)]
    rows += [row("XL", "AS2", "fine.example", False, 2, blocking="null")]
    registry, _ = setup(rows)
    value = registry.get_sample_value
    assert value("gatewatch_measurements_total", {"cc": "XL", "test": "web", "blocking": "dns"}) == 2
    assert value("gatewatch_measurements_total", {"cc": "XL", "test": "web", "blocking": "false"}) == 2
    assert value("gatewatch_measurements_total", {"cc": "XL", "test": "web", "blocking": "null"}) == 1
    assert value("gatewatch_anomalies_total", {"cc": "XL", "test": "web", "blocking": "http-failure"}) == 1
    assert value("gatewatch_anomalies_total", {"cc": "XL", "test": "web", "blocking": "false"}) == 0
    assert value("gatewatch_network_anomaly_ratio", {"cc": "XL", "asn": "AS1"}) == 1.0
    assert value("gatewatch_network_anomaly_ratio", {"cc": "XL", "asn": "AS2"}) == 1 / 3
    assert value("gatewatch_network_measurements", {"cc": "XL", "asn": "AS2"}) == 3
    gw = {"cc": "XL", "domain": "gw.example", "technique": "dns.injection"}
    assert value("gatewatch_interference_scope", {**gw, "scope": "gateway"}) == 1
    assert value("gatewatch_interference_networks_affected", gw) == 2
    assert value("gatewatch_interference_networks_measured", gw) == 2
    isp = {"cc": "XL", "domain": "isp.example", "technique": "tls.reset"}
    assert value("gatewatch_interference_scope", {**isp, "scope": "isp"}) == 1
    assert value("gatewatch_interference_networks_affected", isp) == 1
    assert value("gatewatch_countries_gateway_interference") == 1
    assert value("gatewatch_interference_rows_unexported") == 0
    # a domain with no interference never becomes a label
    assert not [s for s in samples(registry) if s[1].get("domain") == "fine.example"]


def test_exposition_names_are_the_declared_ones() -> None:
    registry, _ = setup(
        [
            row("XL", "AS1", "gw.example", True, payload=traced_payload(3, 59)),
            row("XL", "AS2", "gw.example", True, payload=traced_payload(2, 60)),
        ]
    )
    text = generate_latest(registry).decode()
    exposed = set(re.findall(r"^(gatewatch_[a-z_]+)[{ ]", text, flags=re.M))
    assert exposed == set(METRIC_NAMES)
    located = {
        "cc": "XL",
        "domain": "gw.example",
        "rule": "packet.gateway.same_injector",
        "supports": "gateway",
    }
    assert registry.get_sample_value("gatewatch_interference_packet_evidence", located) == 2


def test_networks_beyond_the_cap_are_summed_as_other() -> None:
    # AS100..AS114: AS100 has the most measurements, AS114 the fewest; odd networks see interference
    # (not AS0..: AS0 is the withheld ASN, which no network gauge counts)
    rows = [
        row("XL", f"AS{100 + n}", f"d{k}.example", n % 2 == 1, minutes_ago=k)
        for n in range(15)
        for k in range(20 - n)
    ]
    registry, _ = setup(rows)
    networks = {s[1]["asn"]: s[2] for s in samples(registry) if s[0] == "gatewatch_network_measurements"}
    assert set(networks) == {f"AS{100 + n}" for n in range(MAX_NETWORKS_PER_COUNTRY)} | {"other"}
    assert networks["other"] == sum(20 - n for n in range(MAX_NETWORKS_PER_COUNTRY, 15))
    ratio = registry.get_sample_value("gatewatch_network_anomaly_ratio", {"cc": "XL", "asn": "other"})
    odd = sum(20 - n for n in range(MAX_NETWORKS_PER_COUNTRY, 15) if n % 2)
    assert ratio == odd / networks["other"]


def test_labels_that_could_carry_free_text_are_bounded() -> None:
    rows = [row("XL", "AS1", "1.2.3.4", True), row("XL", "AS2", "1.2.3.4", True)]  # an IP literal as domain
    rows += [row("XL", asn, "x.example", True, technique="made.up") for asn in ("AS1", "AS2")]
    rows += [row("XL", "AS1", "y.example", False, test_name="https://evil.example/?q=1")]
    rows += [row("XL", "AS1", "y.example", False, blocking="weird")]
    rows += [row("XL", "asn-of-doom", "y.example", False)]
    registry, _ = setup(rows)
    labels = [s[1] for s in samples(registry)]
    assert {lab["domain"] for lab in labels if "domain" in lab} == {"x.example"}
    assert {lab["technique"] for lab in labels if "technique" in lab} == {"other"}
    assert {lab["test"] for lab in labels if "test" in lab} == {"web", "other"}
    assert {lab["blocking"] for lab in labels if "blocking" in lab} == {"dns", "false", "other"}
    assert {lab["asn"] for lab in labels if "asn" in lab} == {"AS1", "AS2", "other"}
    assert registry.get_sample_value("gatewatch_interference_rows_unexported") == 1


def test_every_vocabulary_technique_is_its_own_label() -> None:
    """A technique the analysis can name reaches dashboards as itself, never as ``other``: a gateway row
    per technique, each in a country of its own (so no per-country cap leaves one out)."""
    countries = {technique: "X" + chr(65 + i) for i, technique in enumerate(vocabulary.TECHNIQUES)}
    rows = [
        row(cc, asn, "blocked.example", True, technique=technique, fingerprint_key=f"fp-{technique}")
        for technique, cc in countries.items()
        for asn in ("AS1", "AS2")
    ]
    registry, _ = setup(rows)
    exported = {
        s[1]["cc"]: s[1]["technique"] for s in samples(registry) if s[0] == "gatewatch_interference_scope"
    }
    assert exported == {cc: technique for technique, cc in countries.items()}


def test_every_vocabulary_blocking_value_is_its_own_label() -> None:
    rows = [
        row("XL", "AS1", "d.example", label != "false", blocking=label)
        for label in vocabulary.BLOCKING_LABELS
    ]
    registry, _ = setup(rows)
    for label in vocabulary.BLOCKING_LABELS:
        labels = {"cc": "XL", "test": "web", "blocking": label}
        assert registry.get_sample_value("gatewatch_measurements_total", labels) == 1, label


def test_country_labels_are_stable_so_counters_stay_monotonic() -> None:
    first = [
        row(chr(65 + i // 26) + chr(65 + i % 26), "AS1", "d.example", False) for i in range(MAX_COUNTRIES)
    ]
    registry, aggregate = setup(first)
    before = registry.get_sample_value(
        "gatewatch_measurements_total", {"cc": "AA", "test": "web", "blocking": "false"}
    )
    # a 101st country arrives with more measurements than any other: it still becomes "other"
    aggregate.add_rows(row("ZQ", "AS1", "d.example", False, minutes_ago=m) for m in range(50))
    ccs = {s[1]["cc"] for s in samples(registry) if s[0] == "gatewatch_measurements_total"}
    assert "ZQ" not in ccs and "other" in ccs and len(ccs) == MAX_COUNTRIES + 1
    after = registry.get_sample_value(
        "gatewatch_measurements_total", {"cc": "AA", "test": "web", "blocking": "false"}
    )
    assert before == after == 1


def test_collect_reuses_families_until_the_aggregate_changes() -> None:
    registry, aggregate = setup([row("XL", "AS1", "d.example", True)])
    [collector] = [c for c in registry._collector_to_names]  # the only one registered
    first = collector.collect()
    assert collector.collect() is first
    aggregate.add_rows([row("XL", "AS2", "d.example", True)])
    assert collector.collect() is not first


async def test_rendering_in_a_thread_while_rows_arrive() -> None:
    # collector/metrics.py renders /metrics with asyncio.to_thread while ingest keeps adding rows
    registry, aggregate = setup([])
    render = asyncio.create_task(asyncio.to_thread(lambda: [generate_latest(registry) for _ in range(30)]))
    for batch in range(200):
        aggregate.add_rows(row("XL", f"AS{batch % 13 + 1}", f"d{batch}.example", True, k) for k in range(20))
        await asyncio.sleep(0)
    await render
    assert registry.get_sample_value("gatewatch_network_measurements", {"cc": "XL", "asn": "AS1"}) == 16 * 20


def synthetic_rows() -> Iterator[SimpleNamespace]:
    """10,000 agents in 1,000 networks over 130 countries, measuring among 2,000 domains.

    Ten large countries hold 60 networks each (past the per-country network cap); 130 countries in all
    (past the country cap). Every agent measures 5 of the first 100 domains, which every network in its
    country sees blocked the same way (gateway rows, past the domain caps), and 5 others. One agent in ten
    reports a free-form test name (past the test-name guard). Rows are generated, never held in a list."""
    for agent in range(10_000):
        network = agent % 1_000
        country = network // 60 if network < 600 else 10 + (network - 600) % 120
        cc = chr(65 + country // 26) + chr(65 + country % 26)
        for j in range(10):
            # the agents of one network spread over the blocked domains, and neighbouring networks overlap
            domain = (agent // 1_000 * 7 + j * 17 + network) % 100 if j < 5 else (agent * 7 + j * 211) % 2_000
            blocked = domain < 100
            yield SimpleNamespace(
                measurement_uid=f"{agent:05d}-{j}",
                measurement_start_time=NOW - timedelta(minutes=j + agent % 600),
                received_at=NOW,
                probe_cc=cc,
                probe_asn=f"AS{64_000 + network}",
                test_name=f"custom-{agent}" if agent % 10 == 0 and j == 0 else "web",
                input=f"{('http', 'https')[agent % 2]}://d{domain}.example/",
                domain=f"d{domain}.example",
                blocking="dns" if blocked else "false",
                anomaly=blocked,
                technique="dns.injection" if blocked else None,
                fingerprint_key=f"fp-{cc}" if blocked else None,
                flags=(),
            )


def test_cardinality_budget_at_scale() -> None:
    registry, aggregate = setup([])
    assert aggregate.add_rows(synthetic_rows()) == 100_000
    all_samples = samples(registry)
    per_metric = Counter(name for name, _, _ in all_samples)
    assert len(all_samples) <= SERIES_BUDGET
    assert len(all_samples) == len({(n, tuple(sorted(lab.items()))) for n, lab, _ in all_samples})
    # each cap is reached (so the data really exercises it) and never passed
    per_country_networks = Counter(
        lab["cc"] for n, lab, _ in all_samples if n == "gatewatch_network_measurements"
    )
    assert max(per_country_networks.values()) == MAX_NETWORKS_PER_COUNTRY + 1
    ccs = {lab["cc"] for _, lab, _ in all_samples if "cc" in lab}
    assert len(ccs) == MAX_COUNTRIES + 1 and "other" in ccs
    assert per_metric["gatewatch_interference_scope"] == MAX_INTERFERENCE_ROWS
    assert per_metric["gatewatch_interference_networks_affected"] == MAX_INTERFERENCE_ROWS
    scheme_series = per_metric["gatewatch_interference_scheme_urls"]
    assert MAX_INTERFERENCE_ROWS <= scheme_series <= 2 * MAX_INTERFERENCE_ROWS
    rows_per_country = Counter(lab["cc"] for n, lab, _ in all_samples if n == "gatewatch_interference_scope")
    assert max(rows_per_country.values()) == MAX_DOMAINS_PER_COUNTRY
    assert registry.get_sample_value("gatewatch_interference_rows_unexported") > 0
    assert registry.get_sample_value("gatewatch_countries_gateway_interference") == 130
    # every label value comes from its bounded vocabulary; none is an address
    for name, labels, _ in all_samples:
        assert labels.get("test", "web") in TEST_LABELS
        assert labels.get("blocking", "false") in BLOCKING_LABELS
        assert labels.get("technique", "other") in TECHNIQUE_LABELS
        assert labels.get("scheme", "http") in URL_SCHEMES
        assert re.fullmatch(r"AS\d+|other", labels.get("asn", "other"))
        for value in labels.values():
            try:
                ipaddress.ip_address(value)
            except ValueError:
                continue
            raise AssertionError(f"{name} carries an address: {labels}")


def test_a_domain_blocked_on_one_scheme_only() -> None:
    """Host filtering of http:// while https:// works: the domain's gauges carry its roll-up (gateway), and
    the scheme series says which scheme it is; the clean scheme gets no series."""
    rows = []
    for asn in ("AS1", "AS2", "AS3"):
        for minutes in (30, 20, 10):
            rows.append(
                row("XL", asn, "mixed.example", True, minutes, input="http://mixed.example/",
                    blocking="http-diff", technique="http.blockpage", measurement_uid=f"h-{asn}-{minutes}")
            )  # fmt: skip
            rows.append(
                row("XL", asn, "mixed.example", False, minutes - 1, input="https://mixed.example/",
                    measurement_uid=f"s-{asn}-{minutes}")
            )  # fmt: skip
    registry, _ = setup(rows)
    domain = {"cc": "XL", "domain": "mixed.example", "technique": "http.blockpage"}
    assert registry.get_sample_value("gatewatch_interference_scope", {**domain, "scope": "gateway"}) == 1
    assert registry.get_sample_value("gatewatch_interference_networks_affected", domain) == 3
    scheme = {"cc": "XL", "domain": "mixed.example", "technique": "http.blockpage", "scope": "gateway"}
    assert registry.get_sample_value("gatewatch_interference_scheme_urls", {**scheme, "scheme": "http"}) == 1
    series = [s for s in samples(registry) if s[0] == "gatewatch_interference_scheme_urls"]
    assert [labels["scheme"] for _, labels, _ in series] == ["http"]


# (country, network, domain, blocked, test, blocking): invalid countries and networks, tests and verdicts
# outside the label lists, so that several keys merge under "other"
_ROW_FIELDS = st.tuples(
    st.sampled_from(["XA", "XB", "XC", "x1", "XD"]),
    st.sampled_from(["AS1", "AS2", "AS3", "bogus", "AS4"]),
    st.sampled_from(["a.example", "b.example", "10.0.0.1"]),
    st.booleans(),
    st.sampled_from(["web", "web_connectivity", "dash", "urlgetter"]),
    st.sampled_from(["dns", "tcp_ip", "false", "weird", None]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_ROW_FIELDS, min_size=1, max_size=8), min_size=1, max_size=6))
def test_families_kept_up_to_date_equal_families_built_afresh(batches) -> None:
    # the collector merges each snapshot's changed totals and re-ranks only the countries whose networks
    # changed; a collector that never saw an earlier snapshot builds everything from scratch
    registry, aggregate = setup([])
    [collector] = [c for c in registry._collector_to_names]
    uid = 0
    for batch in batches:
        rows = []
        for cc, asn, domain, blocked, test, blocking in batch:
            uid += 1
            rows.append(
                row(cc, asn, domain, blocked, minutes_ago=uid % 50, measurement_uid=f"u{uid}", test_name=test,
                    blocking=blocking or ("dns" if blocked else "false"))
            )  # fmt: skip
        aggregate.add_rows(rows)
        kept = [(f.name, f.samples) for f in collector.series()]
        afresh = [(f.name, f.samples) for f in type(collector)(aggregate).series()]
        assert kept == afresh

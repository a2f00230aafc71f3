"""The in-memory aggregate: fed row by row, pruned by the window, agreeing with pure attribution."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_type_hints

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.analysis.attribution import (
    AttributionSettings,
    Observation,
    StoredRow,
    attribute,
    attribute_urls,
)
from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.store.base import StoredMeasurement
from gatewatch.core.vocabulary import TECHNIQUES

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


_uid = iter(range(10**9))


def row(
    asn: str,
    state: str,
    minutes_ago: float,
    *,
    cc: str = "XL",
    domain: str = "a.example",
    scheme: str = "https",
    clock_at=T0,
) -> StoredMeasurement:
    """The store's row; state: "F"/"G" interference with that fingerprint, "." clean, "?" no verdict."""
    blocking = {"F": "dns", "G": "http-failure", ".": "false", "?": "null"}[state]
    when = clock_at - timedelta(minutes=minutes_ago)
    return StoredMeasurement(
        measurement_uid=f"uid-{next(_uid)}",
        measurement_start_time=when,
        received_at=when + timedelta(seconds=30),
        probe_cc=cc,
        probe_asn=asn,
        test_name="web",
        domain=domain,
        blocking=blocking,
        anomaly=state in "FG",
        technique={"F": "dns.injection", "G": "tls.reset"}.get(state),
        fingerprint_key={"F": "fpF", "G": "fpG"}.get(state),
        input=f"{scheme}://{domain}/",
        verdict_json="{}",
        payload=b"{}",
    )


def test_the_stores_row_is_what_attribution_reads() -> None:
    # Attribution describes the row it reads as a Protocol (the analysis may not import the collector):
    # every attribute it names is a field of the store's row, with the same type ...
    fields = get_type_hints(StoredMeasurement)
    wanted = {
        name: get_type_hints(member.fget)["return"]
        for name, member in vars(StoredRow).items()
        if isinstance(member, property)
    }
    assert wanted and {name: fields.get(name) for name in wanted} == wanted
    # ... and a real row becomes the observation it stands for, its flags included.
    stored = replace(row("AS1", "F", 10), flags=("asn_mismatch",))
    obs = Observation.from_row(stored)
    assert obs == Observation(
        probe_cc="XL",
        probe_asn="AS1",
        input="https://a.example/",
        domain="a.example",
        test_name="web",
        seen_at=stored.measurement_start_time,
        blocking="dns",
        anomaly=True,
        technique="dns.injection",
        fingerprint_key="fpF",
        measurement_uid=stored.measurement_uid,
        flags=("asn_mismatch",),
    )
    assert obs.technique in TECHNIQUES and not obs.speaks_for_network
    derived = {"seen_at", "packet_sightings"}  # packet_sightings: read from the row's payload
    assert {f.name for f in dataclasses.fields(Observation)} - derived <= fields.keys()


def make(clock: Clock, **kwargs: object) -> InterferenceAggregate:
    return InterferenceAggregate(clock=clock, refresh_interval=0.0, **kwargs)  # type: ignore[arg-type]


def scopes(agg: InterferenceAggregate, cc: str | None = None) -> dict[tuple[str, str], str]:
    return {(r.cc, r.domain): r.scope for r in agg.interference(cc)}


def test_gateway_then_recovery_then_expiry() -> None:
    clock = Clock(T0)
    agg = make(clock)
    agg.add_rows([row("AS1", "F", 30), row("AS2", "F", 20), row("AS3", "F", 10)])
    agg.add_rows([row("AS1", "G", 5, domain="b.example"), row("AS2", ".", 5, domain="b.example")])
    assert scopes(agg) == {("XL", "a.example"): "gateway", ("XL", "b.example"): "isp"}
    [gateway] = agg.interference("XL", scopes=["gateway"])
    assert (gateway.networks_affected, gateway.networks_measured, gateway.technique) == (
        3,
        3,
        "dns.injection",
    )

    # two networks recover: what is left is confined to one network
    agg.add_rows([row("AS1", ".", 2), row("AS2", ".", 1)])
    assert scopes(agg)[("XL", "a.example")] == "isp"

    # a day later, with nothing new, everything has left the window
    clock.now = T0 + timedelta(hours=25)
    agg.prune()
    assert agg.interference() == []
    assert agg.snapshot().networks == {}
    assert agg.snapshot().rows == ()


def test_counts_and_network_window() -> None:
    clock = Clock(T0)
    agg = make(clock)
    agg.add_rows([row("AS1", "F", 20), row("AS1", ".", 19), row("AS1", "?", 18), row("AS2", ".", 7)])
    snap = agg.snapshot()
    assert snap.totals == {
        ("XL", "web", "dns"): (1, 1),
        ("XL", "web", "false"): (2, 0),
        ("XL", "web", "null"): (1, 0),
    }
    # the window counts judged measurements only: a measurement without a verdict says nothing
    assert snap.networks == {("XL", "AS1"): (2, 1), ("XL", "AS2"): (1, 0)}

    # the window moves on in buckets (5 minutes by default): AS1's measurements leave, AS2's stays
    clock.now = T0 + timedelta(hours=24, minutes=-10)
    agg.prune()
    assert agg.snapshot().networks == {("XL", "AS2"): (1, 0)}
    # counters are events since the aggregate was built: the window does not take them back
    assert agg.snapshot().totals[("XL", "web", "dns")] == (1, 1)


def test_withheld_and_contradicted_networks_are_counted_but_not_attributed() -> None:
    clock = Clock(T0)
    agg = make(clock)
    # One honest network, plus rows that would each make a second network showing the same fingerprint.
    agg.add_rows([row("AS1", "F", 20), row("AS1", "F", 10)])
    agg.add_rows([row("AS0", "F", 15), row("AS0", "F", 5)])
    agg.add_rows([replace(row("AS2", "F", 12), flags=("asn_mismatch",))])
    agg.add_rows([replace(row("AS3", "F", 11), flags=("cc_mismatch", "analysis_error"))])
    [r] = agg.interference("XL")
    assert (r.rule_id, r.networks_measured) == ("scope.insufficient.networks", 1)
    snap = agg.snapshot()
    assert snap.networks == {("XL", "AS1"): (2, 2)}  # the per-network gauges leave them out too
    assert snap.totals == {("XL", "web", "dns"): (6, 6)}  # but every measurement is still counted
    # An honest second network makes the gateway verdict the withheld rows could not.
    agg.add_rows([row("AS4", "F", 1)])
    assert scopes(agg) == {("XL", "a.example"): "gateway"}


def test_out_of_order_rows_and_bounded_history() -> None:
    clock = Clock(T0)
    agg = make(clock)
    agg.add_rows([row("AS1", "F", m) for m in range(20, 0, -1)] + [row("AS2", "F", 3)])
    # a late upload of an old clean measurement does not outweigh newer anomalies
    agg.add_rows([row("AS1", ".", 60), row("AS2", ".", 50)])
    assert scopes(agg) == {("XL", "a.example"): "gateway"}
    history = agg._histories[("XL", "a.example", "https://a.example/")]["AS1"]
    assert len(history.recent) == agg.settings.recent_measurements
    # but a late one that is the newest measurement does change the state
    agg.add_rows([row("AS2", ".", 1)])
    assert scopes(agg) == {("XL", "a.example"): "isp"}


def test_first_seen_survives_the_bounded_history() -> None:
    clock = Clock(T0)
    agg = make(clock)
    agg.add_rows([row("AS1", "F", 600 - m) for m in range(30)] + [row("AS2", "F", 5)])
    [r] = agg.interference(scopes=["gateway"])
    assert r.first_seen == T0 - timedelta(minutes=600)


def test_future_rows_are_counted_but_not_judged() -> None:
    clock = Clock(T0)
    agg = make(clock)
    agg.add_rows([row("AS1", "F", -120), row("AS2", "F", -120)])
    assert agg.interference() == []
    assert agg.snapshot().totals[("XL", "web", "dns")] == (2, 2)


def test_refresh_respects_its_key_budget() -> None:
    clock = Clock(T0)
    agg = make(clock, refresh_key_budget=3)
    agg.add_rows(row(asn, "F", 5, domain=f"d{i}.example") for i in range(10) for asn in ("AS1", "AS2"))
    snap = agg.snapshot()
    assert (len(snap.rows), snap.pending) == (3, 7)
    # the API answers for every pair regardless, computing the pending ones on the spot
    assert len(agg.interference(scopes=["gateway", "isp"])) == 10
    for _ in range(3):
        agg.snapshot()
    assert (len(agg.snapshot().rows), agg.pending) == (10, 0)


async def test_rebuild_replaces_state_and_matches_add_rows() -> None:
    clock = Clock(T0)
    rows = [row(f"AS{i % 4}", "F" if i % 4 < 3 else ".", i) for i in range(200)]
    rows += [row("AS1", "G", 3, domain="b.example"), row("AS2", "G", 2, domain="b.example")]

    async def from_store(items: Iterable[StoredMeasurement]) -> AsyncIterator[StoredMeasurement]:
        for item in items:
            yield item

    fed = make(clock)
    fed.add_rows(rows)
    rebuilt = make(clock)
    rebuilt.add_rows([row("AS9", "F", 1, cc="YY"), row("AS8", "F", 1, cc="YY")])  # forgotten by rebuild
    assert await rebuilt.rebuild(from_store(rows), yield_every=16) == len(rows)
    assert rebuilt.pending == 0
    assert rebuilt.interference() == fed.interference()
    # The counters count what this process ingested: rows read back from the store were counted by the
    # process that ingested them (several collectors on one PostgreSQL must add up to the truth).
    assert rebuilt.snapshot().totals == {}
    assert rebuilt.snapshot().networks == fed.snapshot().networks


def test_max_pairs_guards_memory() -> None:
    agg = make(Clock(T0), max_pairs=5)
    agg.add_rows(row("AS1", "F", 1, domain=f"d{i}.example") for i in range(8))
    assert len(agg._histories) == 5 and agg.dropped_pairs == 3
    assert sum(n for n, _ in agg.snapshot().totals.values()) == 8


# Whatever arrives, in whatever order, the aggregate's bounded memory must give the verdicts that pure
# attribution gives over every row.
history_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AS1", "AS2", "AS3"]),
        st.sampled_from(["F", "G", ".", "?"]),
        st.integers(min_value=0, max_value=26 * 60),  # minutes ago: some beyond the 24 h window
        st.sampled_from(["a.example", "b.example"]),
        st.sampled_from(["http", "https"]),
    ),
    min_size=5,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(history_strategy, st.integers(min_value=1, max_value=20))
def test_aggregate_agrees_with_pure_attribution(
    events: list[tuple[str, str, int, str, str]], batch: int
) -> None:
    clock = Clock(T0)
    agg = make(clock)
    rows = [row(asn, state, minutes, domain=d, scheme=scheme) for asn, state, minutes, d, scheme in events]
    for i in range(0, len(rows), batch):
        agg.add_rows(rows[i : i + batch])
    expected = [
        r for r in attribute(map(Observation.from_row, rows), T0, AttributionSettings()) if r.networks
    ]
    got = agg.interference(now=T0)

    def essentials(r):  # what retention may not change (examples may differ: only recent ones are kept)
        return (r.cc, r.domain, r.input, r.decided_by, r.urls_measured, r.urls_affected, r.scope, r.rule_id,
                r.technique, r.fingerprint_key, r.networks_affected, r.networks_measured, r.first_seen,
                r.last_seen, r.networks)  # fmt: skip

    assert [essentials(r) for r in got] == [essentials(r) for r in expected]
    # per URL too, and the maintained gateway/isp rows are the same as those computed afresh
    observations = list(map(Observation.from_row, rows))
    expected_urls = [r for r in attribute_urls(observations, T0, AttributionSettings()) if r.networks]
    assert [essentials(r) for r in agg.interference(now=T0, urls=True)] == [
        essentials(r) for r in expected_urls
    ]
    reported = ("gateway", "isp")
    assert [essentials(r) for r in agg.interference(scopes=reported)] == [
        essentials(r) for r in expected if r.scope in reported
    ]

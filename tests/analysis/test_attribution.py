"""Attribution rules, table-driven: per-network measurement histories in, the expected rule out."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from gatewatch.analysis.attribution import (
    RULES,
    AttributionSettings,
    Observation,
    attribute,
    attribute_domain,
    network_state,
)
from gatewatch.core.vocabulary import SCOPES
from gatewatch.core.wire import InterferenceRow as WireRow

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CC, DOMAIN = "XL", "blocked.example"
# Symbols of a history: a fingerprinted interference, a clean measurement, no verdict, unfingerprinted.
SYMBOLS = {
    "F": ("dns", "dns.injection", "fpF"),
    "G": ("http-failure", "tls.reset", "fpG"),
    "H": ("http-diff", "http.blockpage", "fpH"),
    "x": ("http-diff", "http.diff", None),
    ".": ("false", None, None),
    "?": ("null", None, None),
}


def history(asn: str, symbols: str, hours_ago: float = 2.0, step_minutes: float = 10.0) -> list[Observation]:
    """Measurements of one network, oldest first, starting ``hours_ago`` before NOW."""
    start = NOW - timedelta(hours=hours_ago)
    out = []
    for i, symbol in enumerate(symbols.replace(" ", "")):
        blocking, technique, key = SYMBOLS[symbol]
        out.append(
            Observation(
                probe_cc=CC,
                probe_asn=asn,
                input=f"https://{DOMAIN}/",
                domain=DOMAIN,
                test_name="web",
                seen_at=start + timedelta(minutes=step_minutes * i),
                blocking=blocking,
                anomaly=blocking not in ("false", "null"),
                technique=technique,
                fingerprint_key=key,
                measurement_uid=f"{asn}-{hours_ago}-{i:04d}",
            )
        )
    return out


@dataclass
class Case:
    name: str
    rule_id: str  # its scope is the rule's (RULES[rule_id].scope)
    affected: int
    settings: AttributionSettings
    networks: dict[str, str | tuple[str, float]]  # asn -> symbols, or (symbols, hours_ago)


def case(name: str, rule: str, affected: int = 0, settings: AttributionSettings | None = None, **networks):
    return Case(name, "scope." + rule, affected, settings or AttributionSettings(), networks)


GATEWAY, ALL_CLEAN = "gateway.same_fingerprint", "none.all_clean"
CASES = [
    case("gateway", GATEWAY, 3, AS1="FFF", AS2="FF", AS3="F"),
    case("gateway-two-networks-once-each", GATEWAY, 2, AS1="F", AS2="F"),
    case("isp-only", "isp.single_network", 1, AS1="FFFF", AS2="....", AS3="..."),
    case("isp-several-with-clean", "isp.clean_networks", 2, AS1="FF", AS2="FF", AS3=".."),
    case("different-fingerprints", "isp.no_shared_fingerprint", 2, AS1="FFF", AS2="GGG"),
    case("unfingerprinted-is-never-shared", "isp.no_shared_fingerprint", 2, AS1="xx", AS2="xx"),
    # A flapping network neither makes nor vetoes a gateway verdict ...
    case("flapping-third-network", GATEWAY, 2, AS1="FFF", AS2="FFF", AS3="F.F.F."),
    # ... but still counts as measured, so it can pull the share below the threshold.
    case("flapping-lowers-share", "isp.low_share", 2, AS1="FF", AS2="FF", AS3=".F.F", AS4="F.F."),
    case("only-flapping", "insufficient.flapping", AS1="F.F.F.", AS2=".F.F.F"),
    # A network that settles after flapping has a state again.
    case("flapping-then-settled", GATEWAY, 2, AS1="F.F.FFF", AS2="FF"),
    case("recovery-one-network", "isp.single_network", 1, AS1="FFFF..", AS2="FFFF"),
    case("recovery-everywhere", ALL_CLEAN, AS1="FFFF.", AS2="FFF.."),
    # One poisoned network (or one bad agent in it) cannot make the country look blocked.
    case("one-poisoned-network", "isp.single_network", 1, AS1="F" * 40, AS2="..", AS3=".", AS4="."),
    case("poisoned-network-alone", "insufficient.networks", AS1="F" * 40),
    case("bad-agent-interleaved", "insufficient.flapping", AS1="F.F.F.F.", AS2="....", AS3="..."),
    case("too-few-measurements", "insufficient.measurements", AS1="F"),
    case("no-verdicts-do-not-count", "insufficient.measurements", AS1="F", AS2="???"),
    case("all-clean", ALL_CLEAN, AS1="...", AS2="."),
    # Measured before the interference began: its cleanliness is stale, so it does not veto.
    case("stale-clean-network", GATEWAY, 2, AS1=("FFF", 1.0), AS2=("FF", 1.0), AS3=(".", 5.0)),
    # ... but clean between two episodes is clean during the interference's history: only the current
    # episode's start counts (AS1's run began 80 minutes ago, AS3 was measured 90 minutes ago).
    case("clean-before-current-episode", GATEWAY, 2, AS1="FF..FF", AS2=("FF", 1.0), AS3=(".", 1.5)),
    case("clean-during-episode", "isp.clean_networks", 2, AS1="FF..FF", AS2=("FF", 1.0), AS3=(".", 1.2)),
    case("exempt-clean-network", GATEWAY, 2, AttributionSettings(exempt_asns=frozenset({"AS3"})),
         AS1="FF", AS2="FF", AS3=".."),
    # The window: what happened 25 hours ago is forgotten.
    case("window-expiry", "insufficient.measurements", AS1=("FFF", 30.0), AS2=("FFF", 30.0)),
    case("window-expiry-leaves-recent", ALL_CLEAN, AS1=("FFF", 30.0), AS2=".", AS3="."),
    case("three-networks-needed", "isp.no_shared_fingerprint", 2, AttributionSettings(min_networks_gateway=3),
         AS1="F", AS2="F"),
]  # fmt: skip


def observations_of(case: Case) -> list[Observation]:
    out: list[Observation] = []
    for asn, spec in case.networks.items():
        symbols, hours = (spec, 2.0) if isinstance(spec, str) else spec
        out += history(asn, symbols, hours_ago=hours)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scope_rules(case: Case) -> None:
    row = attribute_domain(CC, DOMAIN, observations_of(case), NOW, case.settings)
    assert row.rule_id == case.rule_id, row.evidence
    assert row.scope == RULES[case.rule_id].scope
    assert row.networks_affected == (case.affected if row.scope in ("gateway", "isp") else 0)
    assert row.packet_evidence is None
    assert row.evidence


# Decided from packet traces (issue 17): exercised in tests/analysis/test_packet_evidence.py.
PACKET_RULE_IDS = {"scope.gateway.same_injector", "scope.isp.different_injectors"}


def test_every_rule_is_exercised() -> None:
    assert {c.rule_id for c in CASES} | PACKET_RULE_IDS == set(RULES)


def test_rule_ids_name_their_scope() -> None:
    for rule_id, rule in RULES.items():
        assert rule_id.split(".")[1] == rule.scope.removesuffix("-data")


def test_the_rules_conclude_every_scope_of_the_vocabulary() -> None:
    assert sorted({rule.scope for rule in RULES.values()}) == sorted(SCOPES)


def test_gateway_row_evidence() -> None:
    obs = history("AS1", "FFF", hours_ago=3) + history("AS2", "FF", hours_ago=1) + history("AS3", "GG")
    row = attribute_domain(CC, DOMAIN, obs, NOW)
    assert row.scope == "gateway"
    assert (row.fingerprint_key, row.technique) == ("fpF", "dns.injection")
    assert (row.networks_affected, row.networks_measured) == (2, 3)
    assert "AS1, AS2" in row.evidence and "other interference: AS3" in row.evidence
    # first/last seen are those of the shared fingerprint, not AS3's different interference
    assert row.first_seen == NOW - timedelta(hours=3)
    assert row.last_seen == NOW - timedelta(hours=1) + timedelta(minutes=10)
    assert row.example_measurement_uids == ("AS2-1-0001", "AS2-1-0000", "AS1-3-0002")
    states = {s.asn: s.condition for s in row.networks}
    assert states == {"AS1": "affected", "AS2": "affected", "AS3": "affected"}


def test_rows_serialise_to_json() -> None:
    # GET /api/v1/interference serves a row as the wire model built from its attributes.
    row = attribute_domain(
        CC, DOMAIN, history("AS1", "F", hours_ago=1) + history("AS2", "F", hours_ago=1), NOW
    )
    data = json.loads(WireRow.model_validate(row, from_attributes=True).model_dump_json())
    assert data["scope"] == "gateway" and data["packet_evidence"] is None
    assert data["first_seen"] == data["last_seen"] == "2026-11-23T11:00:00Z"
    assert [n["asn"] for n in data["networks"]] == ["AS1", "AS2"]
    assert data["example_measurement_uids"] == list(row.example_measurement_uids)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_rules_row_fits_the_wire_contract(case: Case) -> None:
    """GET /api/v1/interference answers each row through the wire model: a row of every rule must fit it."""
    row = attribute_domain(CC, DOMAIN, observations_of(case), NOW, case.settings)
    wire = WireRow.model_validate(row, from_attributes=True)
    assert wire.rule_id == row.rule_id and len(wire.networks) == len(row.networks)


def test_isp_row_names_its_technique_and_clean_networks() -> None:
    obs = history("AS1", "GG") + history("AS2", "GG") + history("AS3", "..", hours_ago=0.5)
    row = attribute_domain(CC, DOMAIN, obs, NOW)
    assert (row.scope, row.technique, row.fingerprint_key) == ("isp", "tls.reset", "fpG")
    assert "clean since it appeared: AS3" in row.evidence


def test_none_row_has_no_interference_fields() -> None:
    row = attribute_domain(CC, DOMAIN, history("AS1", "..") + history("AS2", "."), NOW)
    assert (row.technique, row.fingerprint_key, row.first_seen, row.last_seen) == (None, None, None, None)
    assert len(row.example_measurement_uids) == 3


@pytest.mark.parametrize(
    ("symbols", "condition"),
    [
        ("F", "affected"),
        (".", "clean"),
        ("FFFF.", "clean"),  # recovered at once: the latest judged measurement decides
        ("....F", "affected"),  # and began at once (one network alone never makes a gateway verdict)
        ("F.F.", "flapping"),
        (".F.F.F", "flapping"),
        ("F.F...", "clean"),  # settled into a clean run
        ("F.F.FFF", "affected"),  # settled into an anomalous run
        ("F.F" + "." * 6 + "F", "affected"),  # old flaps fall out of the recent measurements
    ],
)
def test_network_state(symbols: str, condition: str) -> None:
    state = network_state("AS1", history("AS1", symbols), AttributionSettings())
    assert state.condition == condition
    assert state.measurements == min(len(symbols), AttributionSettings().recent_measurements)


def test_network_state_takes_the_runs_dominant_fingerprint() -> None:
    obs = history("AS1", "FFG")
    assert network_state("AS1", obs, AttributionSettings()).fingerprint_key == "fpF"
    assert network_state("AS1", history("AS1", "FG"), AttributionSettings()).fingerprint_key == "fpG"


def test_future_measurements_are_ignored() -> None:
    future = [replace(o, seen_at=NOW + timedelta(hours=2)) for o in history("AS3", "FFF")]
    row = attribute_domain(CC, DOMAIN, history("AS1", "..") + history("AS2", "..") + future, NOW)
    assert (row.scope, row.networks_measured) == ("none", 2)


def test_attribute_groups_by_country_and_domain() -> None:
    obs = history("AS1", "F") + history("AS2", "F")
    other_domain = [replace(o, domain="fine.example", blocking="false", anomaly=False) for o in obs]
    other_country = [replace(o, probe_cc="YY") for o in obs]
    rows = attribute(obs + other_domain + other_country, NOW)
    assert [(r.cc, r.domain, r.scope) for r in rows] == [
        ("XL", "blocked.example", "gateway"),
        ("XL", "fine.example", "none"),
        ("YY", "blocked.example", "gateway"),
    ]


def stored_row(**changes: object) -> SimpleNamespace:
    """A row as the store hands it to attribution (the fields of ``StoredRow``)."""
    fields: dict[str, object] = {
        "measurement_uid": "u1",
        "received_at": NOW,
        "measurement_start_time": NOW,
        "probe_cc": "XL",
        "probe_asn": "AS1",
        "test_name": "web",
        "input": "https://d.example/",
        "domain": "d.example",
        "blocking": "dns",
        "anomaly": True,
        "technique": "dns.injection",
        "fingerprint_key": "k",
        "flags": (),
    }
    return SimpleNamespace(**{**fields, **changes})


def test_from_row_accepts_store_rows() -> None:
    start = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    row = stored_row(received_at=start - timedelta(minutes=5), measurement_start_time=start)  # clock ahead
    obs = Observation.from_row(row)
    assert obs.seen_at == start - timedelta(minutes=5)
    assert (obs.blocking, obs.anomaly, obs.judged) == ("dns", True, True)
    # The store keeps "no verdict" as the label null: such a row is not judged. A clock that is not ahead
    # leaves the start time as it is; a naive time is taken as UTC.
    undecided = SimpleNamespace(
        **{**vars(row), "blocking": "null", "anomaly": False, "received_at": start + timedelta(minutes=1)}
    )
    obs = Observation.from_row(undecided)
    assert (obs.blocking, obs.anomaly, obs.judged, obs.seen_at) == ("null", False, False, start)
    naive = SimpleNamespace(**{**vars(undecided), "measurement_start_time": start.replace(tzinfo=None)})
    assert Observation.from_row(naive).seen_at == start


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_networks_gateway": 1},
        {"gateway_share": 0.0},
        {"window": timedelta(0)},
        {"recent_measurements": 0},
    ],
)
def test_settings_refuse_unsafe_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AttributionSettings(**kwargs)  # type: ignore[arg-type]


def test_withheld_asn_is_not_a_network() -> None:
    # AS0 pools every volunteer who withheld their network: unrelated ISPs' blocking must not add up to one
    # more "network" (nor their clean results veto a real verdict elsewhere).
    withheld = history("AS0", "FFF")
    row = attribute_domain(CC, DOMAIN, history("AS1", "FFF") + withheld, NOW)
    assert (row.rule_id, row.networks_measured) == ("scope.insufficient.networks", 1)
    row = attribute_domain(
        CC, DOMAIN, history("AS1", "FF") + history("AS2", "FF") + history("AS0", ".."), NOW
    )
    assert (row.scope, row.networks_measured) == ("gateway", 2)
    assert "AS0" not in {n.asn for n in row.networks}


@pytest.mark.parametrize("flag", ["asn_mismatch", "cc_mismatch"])
def test_measurements_whose_claims_were_contradicted_are_not_counted(flag: str) -> None:
    # A single agent claiming to be in a second network (the upload came from elsewhere) must not turn its
    # own network's interference into a gateway verdict ...
    claimed = [replace(o, flags=(flag,)) for o in history("AS2", "FFF")]
    row = attribute_domain(CC, DOMAIN, history("AS1", "FFF") + claimed + history("AS3", "..."), NOW)
    assert (row.scope, row.rule_id, row.networks_measured) == ("isp", "scope.isp.single_network", 2)
    # ... nor veto one with claimed clean results.
    vetoes = [replace(o, flags=("other_note", flag)) for o in history("AS3", "......", hours_ago=1)]
    row = attribute_domain(CC, DOMAIN, history("AS1", "FF") + history("AS2", "FF") + vetoes, NOW)
    assert (row.scope, row.networks_measured) == ("gateway", 2)
    # A flag that says nothing about the claimed network changes nothing.
    noted = [replace(o, flags=("analysis_error",)) for o in history("AS2", "FFF")]
    row = attribute_domain(CC, DOMAIN, history("AS1", "FFF") + noted, NOW)
    assert (row.scope, row.networks_measured) == ("gateway", 2)


def test_from_row_keeps_the_stores_flags() -> None:
    row = stored_row(flags=("asn_mismatch",))
    obs = Observation.from_row(row)
    assert (obs.flags, obs.speaks_for_network) == (("asn_mismatch",), False)
    assert Observation.from_row(SimpleNamespace(**{**vars(row), "flags": ()})).speaks_for_network
    assert not Observation.from_row(
        SimpleNamespace(**{**vars(row), "flags": (), "probe_asn": "AS0"})
    ).speaks_for_network

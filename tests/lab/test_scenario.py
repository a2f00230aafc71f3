"""The scenario loader: the packaged default says what the brief asks, and malformed files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.core.vocabulary import BLOCKING_LAYERS, SCOPES, blocking_label
from gatewatch.lab.scenario import EXPECTED_SCOPES, ScenarioError, load_scenario, parse_scenario

EXPECTED_DEFAULT = {
    # domain: (scheme, {network: blocking}, scope)
    "clean.lab": ("http", {"clean": False, "isp-a": False, "isp-b": False, "isp-c": False}, "none"),
    "secure.lab": ("https", {"clean": False, "isp-a": False, "isp-b": False, "isp-c": False}, "none"),
    "injected.lab": ("http", {"clean": False, "isp-a": "dns", "isp-b": "dns", "isp-c": "dns"}, "gateway"),
    "nxdomain.lab": ("http", {"clean": False, "isp-a": "dns", "isp-b": "dns", "isp-c": "dns"}, "gateway"),
    "bogus.lab": ("http", {"clean": False, "isp-a": "dns", "isp-b": "dns", "isp-c": "dns"}, "gateway"),
    "sni-reset.lab": (
        "https",
        {"clean": False, "isp-a": "http-failure", "isp-b": "http-failure", "isp-c": "http-failure"},
        "gateway",
    ),
    "blockpage.lab": (
        "http",
        {"clean": False, "isp-a": "http-diff", "isp-b": "http-diff", "isp-c": "http-diff"},
        "gateway",
    ),
    "blackhole.lab": (
        "http",
        {"clean": False, "isp-a": "tcp_ip", "isp-b": "tcp_ip", "isp-c": "tcp_ip"},
        "gateway",
    ),
    "isp-blockpage.lab": (
        "http",
        {"clean": False, "isp-a": "http-diff", "isp-b": False, "isp-c": False},
        "isp",
    ),
    "nonexistent.lab": ("http", {"clean": False, "isp-a": False, "isp-b": False, "isp-c": False}, "none"),
    "echo.lab": ("http", {"clean": False, "isp-a": False, "isp-b": False, "isp-c": False}, "none"),
    "hostfilter.lab": (
        "http",
        {"clean": False, "isp-a": "http-diff", "isp-b": "http-diff", "isp-c": "http-diff"},
        "gateway",
    ),
    "snifilter.lab": (
        "http",
        {"clean": False, "isp-a": "http-failure", "isp-b": "http-failure", "isp-c": "http-failure"},
        "gateway",
    ),
}


def test_default_scenario_holds_every_required_domain() -> None:
    scenario = load_scenario("default")
    for name, (scheme, blocking, scope) in EXPECTED_DEFAULT.items():
        spec = scenario.domain(name)
        assert (spec.scheme, spec.blocking, spec.expected_scope) == (scheme, blocking, scope), name
    assert not scenario.domain("nonexistent.lab").exists
    assert scenario.domain("isp-blockpage.lab").networks == ("isp-a",)
    assert scenario.domain("blackhole.lab").networks == ("isp-a", "isp-b", "isp-c")


def test_a_scenario_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        '[[domain]]\nname = "x.lab"\nscheme = "https"\n'
        'behaviours = ["tls_reset"]\nblocking = "http-failure"\n'
    )
    scenario = load_scenario(path)
    assert scenario.name == "mine"
    assert scenario.domain("x.lab").blocking == {
        "clean": False,
        "isp-a": "http-failure",
        "isp-b": "http-failure",
        "isp-c": "http-failure",
    }
    assert scenario.domain("X.LAB.").name == "x.lab"  # lookups are case- and dot-insensitive
    assert load_scenario(scenario) is scenario


def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.toml")


DOMAIN = '[[domain]]\nname = "x.lab"\nscheme = "http"\n'

MALFORMED = [
    ("not toml [", "not valid TOML"),
    ('name = "empty"\n', "at least one"),
    ('colour = "blue"\n' + DOMAIN, "unknown top-level key"),
    ('[[domain]]\nscheme = "http"\n', "missing 'name'"),
    ('[[domain]]\nname = "x.lab"\n', "missing 'scheme'"),
    ('[[domain]]\nname = "not a host"\nscheme = "http"\n', "not a hostname"),
    ('[[domain]]\nname = "x.lab"\nscheme = "gopher"\n', "scheme 'gopher'"),
    (DOMAIN + 'behaviors = ["blackhole"]\n', "unknown key"),
    (DOMAIN + 'behaviours = ["teleport"]\n', "unknown behaviour 'teleport'"),
    (DOMAIN + 'behaviours = "blackhole"\n', "must be a list"),
    (DOMAIN + 'behaviours = ["blackhole", "blackhole"]\n', "listed twice"),
    (DOMAIN + 'behaviours = ["blackhole"]\nnetworks = ["isp-z"]\n', "unknown network 'isp-z'"),
    (DOMAIN + 'behaviours = ["blackhole"]\nnetworks = []\n', "non-empty list"),
    (DOMAIN + 'behaviours = ["blackhole"]\nnetworks = ["clean"]\n', "control vantage"),
    (DOMAIN + 'behaviours = ["tls_reset"]\n', "needs scheme 'https'"),
    (
        '[[domain]]\nname = "x.lab"\nscheme = "https"\nbehaviours = ["http_blockpage"]\n',
        "needs scheme 'http'",
    ),
    (DOMAIN + 'behaviours = ["blackhole"]\nblocking = "firewall"\n', "blocking 'firewall'"),
    (DOMAIN + 'behaviours = ["blackhole"]\nblocking = true\n', "blocking True"),
    (DOMAIN + 'blocking = "dns"\n', "no censoring behaviour applies"),
    (
        DOMAIN + 'behaviours = ["blackhole"]\nnetworks = ["isp-a"]\nblocking = { isp-b = "tcp_ip" }\n',
        "must be false",
    ),
    (DOMAIN + 'behaviours = ["blackhole"]\nblocking = { isp-q = "tcp_ip" }\n', "unknown network 'isp-q'"),
    (DOMAIN + 'behaviours = ["blackhole"]\nexpected_scope = "planet"\n', "expected_scope 'planet'"),
    (DOMAIN + 'exists = false\nbehaviours = ["blackhole"]\n', "does not exist cannot have behaviours"),
    (DOMAIN + DOMAIN, "defined twice"),
    (
        '[[domain]]\nname = "e.lab"\nscheme = "http"\nbehaviours = ["echo_client"]\n'
        '[[domain]]\nname = "whoami.e.lab"\nscheme = "http"\n',
        "reserved for echo_client",
    ),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_scenarios_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as raised:
        parse_scenario(text, origin="bad.toml")
    assert str(raised.value).startswith("scenario bad.toml")  # says which file


def test_an_error_names_the_domain() -> None:
    with pytest.raises(ScenarioError, match=r"domain\[1\] 'y.lab'"):
        parse_scenario(DOMAIN + '[[domain]]\nname = "y.lab"\nscheme = "ftp"\n')


@pytest.mark.parametrize("layer", BLOCKING_LAYERS)
def test_a_scenario_may_expect_every_blocking_layer_of_the_vocabulary(layer: str) -> None:
    # The scenario's accepted values come from the vocabulary: a layer added there is expectable here.
    spec = parse_scenario(DOMAIN + f'behaviours = ["blackhole"]\nblocking = "{layer}"\n').domain("x.lab")
    assert spec.blocking["isp-a"] == layer and blocking_label(spec.blocking["isp-a"]) == layer


def test_a_scenario_cannot_expect_no_verdict() -> None:
    # The lab's control always answers, so `null` (no verdict) is never what a scenario expects; TOML has
    # no null, and its nearest spellings are refused.
    for spelled in ('"null"', '"false"', "0"):
        with pytest.raises(ScenarioError, match="is not one of"):
            parse_scenario(DOMAIN + f'behaviours = ["blackhole"]\nblocking = {spelled}\n')


def test_the_expectable_scopes_are_the_vocabulary_s_but_insufficient_data() -> None:
    assert set(SCOPES) - set(EXPECTED_SCOPES) == {"insufficient-data"}
    for scope in EXPECTED_SCOPES:
        text = DOMAIN + f'behaviours = ["blackhole"]\nblocking = "tcp_ip"\nexpected_scope = "{scope}"\n'
        assert parse_scenario(text).domain("x.lab").expected_scope == scope
    # and what a scenario derives when it does not say is one of them
    assert {d.expected_scope for d in load_scenario().domains} <= set(EXPECTED_SCOPES)


def test_a_domain_measured_over_both_schemes_expects_blocking_where_a_behaviour_acts() -> None:
    """Host filtering acts on http:// only and SNI filtering on https:// only: the other scheme's URL of the
    same domain expects false, and the domain's scope is the gateway's (interfered when any URL is)."""
    scenario = load_scenario("default")
    host, sni = scenario.domain("hostfilter.lab"), scenario.domain("snifilter.lab")
    assert host.schemes == sni.schemes == ("http", "https")
    assert (host.expected("isp-a", "http"), host.expected("isp-a", "https")) == ("http-diff", False)
    assert (sni.expected("isp-b", "http"), sni.expected("isp-b", "https")) == (False, "http-failure")
    assert host.expected("clean", "http") is False and host.expected_scope == sni.expected_scope == "gateway"
    # a behaviour of no scheme (DNS) acts on every URL
    text = '[[domain]]\nname = "x.lab"\nscheme = ["http", "https"]\n'
    dns = parse_scenario(text + 'behaviours = ["resolver_nxdomain"]\nblocking = "dns"\n').domain("x.lab")
    assert dns.expected("isp-a", "http") == dns.expected("isp-a", "https") == "dns"


@pytest.mark.parametrize(
    ("schemes", "error"),
    [
        ("[]", "each once"),
        ('["http", "http"]', "each once"),
        ('["http", "gopher"]', "'gopher'"),
        ("3", "scheme 3 "),
    ],
)
def test_bad_scheme_lists_are_refused(schemes: str, error: str) -> None:
    with pytest.raises(ScenarioError, match=error):
        parse_scenario(f'[[domain]]\nname = "x.lab"\nscheme = {schemes}\n')


def test_a_domain_may_start_switched_off_but_not_a_blackhole() -> None:
    text = '[[domain]]\nname = "x.lab"\nscheme = "http"\nbehaviours = ["http_blockpage"]\n'
    text += 'blocking = "http-diff"\n'
    assert parse_scenario(text).domain("x.lab").switch.on
    assert not parse_scenario(text + "switched_on = false\n").domain("x.lab").switch.on
    hole = '[[domain]]\nname = "x.lab"\nscheme = "http"\nbehaviours = ["blackhole"]\nswitched_on = false\n'
    with pytest.raises(ScenarioError, match="cannot start switched off"):
        parse_scenario(hole)

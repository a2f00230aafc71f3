"""The per-URL state and the roll-up to the domain: a domain is interfered with when any of its URLs is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.analysis.attribution import (
    AttributionSettings,
    Observation,
    attribute,
    attribute_domain,
    attribute_url,
    attribute_urls,
)
from gatewatch.analysis.url_rollup import SCOPE_SERIOUSNESS, roll_up

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CC, DOMAIN = "XL", "mixed.example"
HTTP, HTTPS = f"http://{DOMAIN}/", f"https://{DOMAIN}/"


def measurements(url: str, asn: str, states: str, *, start_minutes_ago: int = 60) -> list[Observation]:
    """One measurement per symbol, oldest first: "B" the blockpage, "R" a TLS reset, "." clean."""
    kinds = {
        "B": ("http-diff", "http.blockpage", "fp-blockpage"),
        "R": ("http-failure", "tls.reset", "fp-reset"),
        ".": ("false", None, None),
    }
    out = []
    for i, symbol in enumerate(states):
        blocking, technique, key = kinds[symbol]
        out.append(
            Observation(
                probe_cc=CC,
                probe_asn=asn,
                input=url,
                domain=DOMAIN,
                test_name="web",
                seen_at=NOW - timedelta(minutes=start_minutes_ago - 5 * i),
                blocking=blocking,
                anomaly=symbol != ".",
                technique=technique,
                fingerprint_key=key,
                measurement_uid=f"{url}-{asn}-{i}",
            )
        )
    return out


def test_host_filtering_of_http_is_not_hidden_by_a_later_clean_https() -> None:
    """The case the per-domain state got wrong: in every network the latest measurement of the domain is
    a clean https://, measured just after the blocked http://."""
    obs = []
    for asn in ("AS1", "AS2", "AS3"):
        obs += measurements(HTTP, asn, "BBB", start_minutes_ago=60)
        obs += measurements(HTTPS, asn, "...", start_minutes_ago=58)  # each two minutes later
    http, https = (attribute_url(CC, url, obs, NOW) for url in (HTTP, HTTPS))
    assert (http.scope, http.technique, http.networks_affected, http.input) == (
        "gateway",
        "http.blockpage",
        3,
        HTTP,
    )
    assert (https.scope, https.networks_affected, https.urls_affected) == ("none", 0, 0)
    domain = attribute_domain(CC, DOMAIN, obs, NOW)
    assert (domain.scope, domain.rule_id, domain.technique) == ("gateway", http.rule_id, "http.blockpage")
    assert (domain.input, domain.decided_by, domain.urls_measured, domain.urls_affected) == (None, HTTP, 2, 1)
    assert [r.domain for r in attribute(obs, NOW)] == [DOMAIN]
    assert [r.input for r in attribute_urls(obs, NOW)] == [HTTP, HTTPS]


def test_sni_filtering_of_https_while_http_works() -> None:
    obs = []
    for asn in ("AS1", "AS2"):
        obs += measurements(HTTPS, asn, "RR") + measurements(HTTP, asn, "..", start_minutes_ago=59)
    domain = attribute_domain(CC, DOMAIN, obs, NOW)
    assert (domain.scope, domain.technique, domain.decided_by) == ("gateway", "tls.reset", HTTPS)


def test_a_block_on_one_path_only() -> None:
    blocked, fine = f"http://{DOMAIN}/news", f"http://{DOMAIN}/"
    obs = measurements(blocked, "AS1", "BB") + measurements(fine, "AS1", "..", start_minutes_ago=55)
    obs += measurements(fine, "AS2", "..") + measurements(blocked, "AS2", "..", start_minutes_ago=50)
    domain = attribute_domain(CC, DOMAIN, obs, NOW)
    assert (domain.scope, domain.rule_id, domain.decided_by) == ("isp", "scope.isp.single_network", blocked)
    assert (domain.urls_measured, domain.urls_affected) == (2, 1)


def test_the_most_serious_url_decides() -> None:
    """gateway before isp before insufficient-data before none; a domain is none only if every URL is."""
    gateway = measurements(HTTP, "AS1", "BB") + measurements(HTTP, "AS2", "BB")
    isp = measurements(HTTPS, "AS1", "RR") + measurements(HTTPS, "AS2", "..")
    lonely = measurements(f"http://{DOMAIN}/x", "AS1", ".")  # one measurement: insufficient data
    clean = measurements(f"http://{DOMAIN}/y", "AS1", "..") + measurements(f"http://{DOMAIN}/y", "AS2", "..")
    assert attribute_domain(CC, DOMAIN, gateway + isp + lonely + clean, NOW).scope == "gateway"
    assert attribute_domain(CC, DOMAIN, isp + lonely + clean, NOW).scope == "isp"
    assert attribute_domain(CC, DOMAIN, lonely + clean, NOW).scope == "insufficient-data"
    assert attribute_domain(CC, DOMAIN, clean, NOW).scope == "none"


def test_a_url_with_nothing_in_the_window_takes_no_part() -> None:
    old = measurements(HTTPS, "AS1", "R", start_minutes_ago=25 * 60)  # outside the 24 h window
    clean = measurements(HTTP, "AS1", "..") + measurements(HTTP, "AS2", "..")
    row = attribute_domain(CC, DOMAIN, old + clean, NOW)
    assert (row.scope, row.urls_measured) == ("none", 1)


def test_roll_up_needs_a_row() -> None:
    with pytest.raises(ValueError):
        roll_up([])


URLS = (HTTP, HTTPS, f"http://{DOMAIN}/a")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(URLS),
            st.sampled_from(["AS1", "AS2", "AS3"]),
            st.text("BR.", min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=9,
    )
)
def test_the_domain_is_interfered_with_exactly_when_a_url_is(histories: list[tuple[str, str, str]]) -> None:
    obs = [
        o
        for i, (url, asn, states) in enumerate(histories)
        for o in measurements(url, asn, states, start_minutes_ago=100 - i)
    ]
    url_rows = attribute_urls(obs, NOW, AttributionSettings())
    [domain] = attribute(obs, NOW)
    worst = min(SCOPE_SERIOUSNESS.index(r.scope) for r in url_rows)
    assert domain.scope == SCOPE_SERIOUSNESS[worst]
    assert domain.urls_affected == sum(r.scope in ("gateway", "isp") for r in url_rows)
    assert domain.decided_by in {r.input for r in url_rows if r.scope == domain.scope}

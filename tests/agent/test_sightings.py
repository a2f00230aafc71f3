"""Which results make a sighting (agent/sightings.py), its padded body, and its delivery to a real collector
(``report_sighting``): padded to a fixed size, answered with the wire model, a 422 is an answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gatewatch.agent.collector_api import ApiFailure, fetch_confirmations, make_session, report_sighting
from gatewatch.agent.daemon import ConfirmationBudget
from gatewatch.agent.paths import DataPaths
from gatewatch.agent.run_commands import _confirm_once
from gatewatch.agent.run_records import RunOptions, UrlResult
from gatewatch.agent.settings import AgentSettings, DaemonSettings
from gatewatch.agent.sightings import BODY_BUCKETS, MAX_URL_LENGTH, choose_sighting, sighting_body
from gatewatch.collector.app import create_app
from gatewatch.collector.settings import Settings
from gatewatch.core.vocabulary import NOT_LISTED, WITHHELD_CC
from gatewatch.core.wire import MAX_SIGHTING_URLS, Sighting, SightingAnswer


def result(url: str, blocking: str | bool | None, control_failure: str | None = None) -> UrlResult:
    return UrlResult(url, "NEWS", f"uid-{url}", blocking, None, None, control_failure)


OPEN = result("http://open.example/", False)


def test_blocked_urls_of_a_working_line_make_a_sighting_for_the_country() -> None:
    results = [OPEN, result("http://a.example/", "dns"), result("https://b.example/", "http-failure")]
    assert choose_sighting(results, "xl") == Sighting(
        cc="XL", urls=["http://a.example/", "https://b.example/"]
    )


@pytest.mark.parametrize(
    "results",
    [
        [],
        [OPEN, result("http://n.example/", None)],  # no verdict is no anomaly
        [OPEN, result("http://c.example/", "dns", control_failure="generic_timeout_error")],
        [OPEN, result("ftp://f.example/", "dns")],  # not a URL the collector could list
        [OPEN, result("http://long.example/" + "x" * MAX_URL_LENGTH, "dns")],
    ],
)
def test_what_is_no_anomaly_makes_no_sighting(results: list[UrlResult]) -> None:
    assert choose_sighting(results, "XL") is None


def test_a_line_where_nothing_works_is_the_volunteers_connection_not_censorship() -> None:
    down = [result(f"http://u{i}.example/", "tcp_ip") for i in range(20)]
    assert choose_sighting(down, "XL") is None
    assert choose_sighting([*down, OPEN], "XL") is not None  # one reachable site: the line works


@pytest.mark.parametrize("cc", [WITHHELD_CC, "zz", ""])
def test_the_withheld_country_sights_nothing(cc: str) -> None:
    assert choose_sighting([OPEN, result("http://a.example/", "dns")], cc) is None


def test_a_sighting_names_at_most_the_wire_bound_once_each() -> None:
    blocked = [result(f"http://u{i}.example/", "dns") for i in range(3 * MAX_SIGHTING_URLS)]
    sighting = choose_sighting([OPEN, *blocked, *blocked], "XL")
    assert sighting is not None
    assert sighting.urls == [r.url for r in blocked[:MAX_SIGHTING_URLS]]


def test_the_body_length_does_not_tell_how_many_urls_were_sighted() -> None:
    sizes = {
        len(sighting_body(Sighting(cc="XL", urls=[f"https://site{i}.example/path" for i in range(n)])))
        for n in range(1, MAX_SIGHTING_URLS + 1)
    }
    assert sizes == {BODY_BUCKETS[0]}
    body = sighting_body(Sighting(cc="XL", urls=["http://a.example/"]))
    assert Sighting.model_validate_json(body) == Sighting(cc="XL", urls=["http://a.example/"])
    assert json.loads(body) == {"cc": "XL", "urls": ["http://a.example/"]}  # padding is JSON whitespace


def test_long_urls_take_a_larger_bucket_and_never_exceed_the_largest() -> None:
    long_urls = [f"http://{i}.example/" + "p" * (MAX_URL_LENGTH - 40) for i in range(MAX_SIGHTING_URLS)]
    assert len(sighting_body(Sighting(cc="XL", urls=long_urls))) == BODY_BUCKETS[-1]
    multibyte = ["http://u.example/" + "\u00e9" * 1000 + str(i) for i in range(MAX_SIGHTING_URLS)]
    body = sighting_body(Sighting(cc="XL", urls=multibyte))
    assert len(body) == BODY_BUCKETS[-1]
    assert 1 <= len(Sighting.model_validate_json(body).urls) < MAX_SIGHTING_URLS  # dropped from the end


async def test_report_sighting_reaches_the_real_collector(aiohttp_server: Any, tmp_path: Path) -> None:
    listed = tmp_path / "global.csv"
    listed.write_text("url,category_code\nhttp://x.lab/,NEWS\n")
    settings = Settings(db=f"sqlite:///{tmp_path / 'c.db'}", test_list=(f"global={listed}",))
    server = await aiohttp_server(create_app(settings, registry=CollectorRegistry()), host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    async with make_session() as session:
        answer = await report_sighting(
            session, [base], Sighting(cc="XL", urls=["http://x.lab/", "http://y.lab/"])
        )
        assert isinstance(answer, SightingAnswer) and answer.accepted == ["http://x.lab/"]
        assert [(r.url, r.reason) for r in answer.rejected] == [("http://y.lab/", NOT_LISTED)]
        refused = await report_sighting(session, [base], Sighting(cc="XL", urls=["http://y.lab/"]))
        assert refused == ApiFailure("http_422", "127.0.0.1")
        unreachable = await report_sighting(
            session, ["http://127.0.0.1:9", base], Sighting(cc="XL", urls=["http://x.lab/"])
        )
        assert isinstance(unreachable, SightingAnswer)  # the next address, by its own route


async def test_the_daemons_poll_sends_the_waiting_sighting_and_survives_a_collector_down(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """``_confirm_once`` (the daemon's poll) sends what the last pass sighted, once; an unreachable
    collector is a logged failure, never an exception that would end the daemon."""
    listed = tmp_path / "global.csv"
    listed.write_text("url,category_code\nhttp://x.lab/,NEWS\n")
    settings = Settings(db=f"sqlite:///{tmp_path / 'c.db'}", test_list=(f"global={listed}",))
    server = await aiohttp_server(create_app(settings, registry=CollectorRegistry()), host="127.0.0.1")
    budget = ConfirmationBudget(per_hour=30)
    for collector, listed_after in (
        ("http://127.0.0.1:9", []),
        (f"http://127.0.0.1:{server.port}", ["http://x.lab/"]),
    ):
        agent = AgentSettings(collector_urls=[collector], daemon=DaemonSettings(confirm_per_hour=0))
        outbox = [Sighting(cc="XL", urls=["http://x.lab/"])]
        measured = await _confirm_once(
            DataPaths.at(tmp_path / "agent"), agent, RunOptions.from_settings(agent), budget, {}, outbox
        )
        assert measured == 0 and outbox == []  # sent (or given up) once: the next poll does not resend it
        async with make_session() as session:
            assert await fetch_confirmations(session, f"http://127.0.0.1:{server.port}", "XL") == listed_after

"""Confirmation requests: an anomaly accepted from one network lists its (test-list) URL for the country's
other agents; nothing else is listed, nothing about the reporter is said, and the listing expires."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gatewatch.collector.app import create_app
from gatewatch.collector.confirm import (
    CONFIRM_WINDOW,
    MAX_CONFIRM_URLS,
    SIGHTING_BURST,
    SIGHTING_WINDOW,
    ConfirmationBoard,
)
from gatewatch.collector.logging import ACCESS_LOGGER_NAME, AccessLogger
from gatewatch.collector.metrics import SIGHTING_RESULTS
from gatewatch.collector.settings import Settings
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSQuery
from gatewatch.core.vocabulary import (
    BODY_TOO_LARGE,
    INVALID_CC,
    INVALID_INPUT,
    INVALID_JSON,
    INVALID_REQUEST,
    NOT_LISTED,
    NOTHING_LISTABLE,
    RATE_LIMITED,
    WITHHELD_CC,
)
from gatewatch.core.wire import (
    MAX_CONFIRM_LIST,
    MAX_SIGHTING_BODY,
    MAX_SIGHTING_URLS,
    ConfirmationList,
    SightingAnswer,
)

from .conftest import CONTROL_SECRET

CONTROL = ControlObservations(
    dns=ControlDNS(addrs=["127.80.0.5"]),
    tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
    http_request=ControlHTTP(status_code=200, body_length=100, title="x"),
)


def blocked(make_measurement: Any, url: str, **changes: Any) -> Measurement:
    """NXDOMAIN from the resolver while the control fetched the page: DNS blocking."""
    host = url.split("/")[2]
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname=host, query_type="A", t0=0.0, t=0.01,
                     failure="dns_nxdomain_error", rcode="NXDOMAIN")  # fmt: skip
    return make_measurement(input=url, test_keys=WebTestKeys(queries=[query], control=CONTROL), **changes)


async def test_an_anomaly_lists_its_test_list_url_for_the_country(
    aiohttp_client: Any, tmp_path: Path, sign: Any, make_measurement: Any
) -> None:
    listed = tmp_path / "global.csv"
    listed.write_text("url,category_code\nhttp://x.lab/,NEWS\nhttp://y.lab/,NEWS\nhttp://w.lab/,NEWS\n")
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'c.db'}",
        control_signing_secret=CONTROL_SECRET,
        test_list=(f"global={listed}",),
        accept_identified=True,  # the tests sign with a long-term key (the tokens have their own tests)
    )
    client = await aiohttp_client(create_app(settings))

    async def confirm(query: str) -> ConfirmationList:
        response = await client.get(f"/api/v1/confirm?{query}")
        assert response.status == 200, await response.text()
        return ConfirmationList.model_validate(await response.json())

    assert (await confirm("cc=XL")).urls == []
    uploads = [
        blocked(make_measurement, "http://x.lab/"),  # listed
        blocked(make_measurement, "http://z.lab/"),  # an anomaly, but not on the test list
        blocked(make_measurement, "http://w.lab/", probe_asn="AS0"),  # a withheld network speaks for none
        make_measurement(input="http://y.lab/", test_keys=WebTestKeys(control=CONTROL)),  # no anomaly
    ]
    response = await client.post("/api/v1/measurements", json={"measurements": [sign(m) for m in uploads]})
    assert {r["status"] for r in (await response.json())["results"]} == {"accepted"}
    answer = await confirm("cc=xl")
    assert (answer.cc, answer.urls, answer.poll_seconds) == ("XL", ["http://x.lab/"], 60)
    assert set((await client.get("/api/v1/confirm?cc=XL")).headers) >= {"Content-Type"}
    assert (await confirm("cc=KH")).urls == []  # another country's agents are not sent
    for bad in ("", "cc=", "cc=XLX", "cc=1"):
        response = await client.get(f"/api/v1/confirm?{bad}")
        assert response.status == 400 and (await response.json())["error"]


def test_the_listing_expires_and_is_bounded(make_measurement: Any) -> None:
    now = [1000.0]
    board = ConfirmationBoard(clock=lambda: now[0])

    class Row:  # the store's row, as attribution reads it
        def __init__(self, url: str) -> None:
            m = make_measurement(input=url)
            self.measurement_uid, self.received_at = m.measurement_uid, m.measurement_start_time
            self.measurement_start_time, self.probe_cc, self.probe_asn = m.measurement_start_time, "XL", "AS1"
            self.test_name, self.input, self.domain = "web", url, url.split("/")[2]
            self.blocking, self.anomaly, self.technique, self.fingerprint_key = (
                "dns",
                True,
                "dns.nxdomain",
                "k",
            )
            self.flags = ()

    board.add_rows([Row(f"http://u{i}.lab/") for i in range(30)])
    everything = board.urls("XL", lambda url: True)
    assert len(everything) == 20 and everything[0] == "http://u29.lab/"  # newest first, at most 20
    now[0] += CONFIRM_WINDOW + 1
    assert board.urls("XL", lambda url: True) == []


# --- sightings: POST /api/v1/confirm ------------------------------------------------------------------------
LISTED = [f"http://s{i}.lab/" for i in range(40)]
SENDER = "203.0.113.77"  # the sender's address, as a proxy in front of the collector would pass it on


@pytest.fixture
async def sighting_client(aiohttp_client: Any, tmp_path: Path) -> Any:
    listed = tmp_path / "global.csv"
    listed.write_text("url,category_code\n" + "".join(f"{url},NEWS\n" for url in LISTED))
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'c.db'}",
        control_signing_secret=CONTROL_SECRET,
        test_list=(f"global={listed}",),
        accept_identified=True,  # the judged anomalies are signed with a long-term key
    )
    registry = CollectorRegistry()
    server = TestServer(create_app(settings, registry=registry))
    # the access log as `gatewatch-collector serve` writes it (TestServer drops it given to its constructor)
    await server.start_server(access_log_class=AccessLogger, access_log=logging.getLogger(ACCESS_LOGGER_NAME))
    client = await aiohttp_client(server)
    client.registry = registry
    return client


async def post(client: Any, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/api/v1/confirm", data=data, headers={"Content-Type": "application/json", "X-Forwarded-For": SENDER}
    )


async def listed_now(client: Any, cc: str = "XL") -> list[str]:
    return ConfirmationList.model_validate(await (await client.get(f"/api/v1/confirm?cc={cc}")).json()).urls


def counted(client: Any, result: str) -> float:
    return client.registry.get_sample_value("gatewatch_sightings_total", {"result": result})


async def test_a_sighting_lists_its_test_list_urls_and_says_why_not_the_others(sighting_client: Any) -> None:
    client = sighting_client
    assert all(counted(client, result) == 0 for result in SIGHTING_RESULTS)  # pre-created
    urls = [LISTED[0], "http://elsewhere.lab/", "ftp://s1.lab/", "http://[::1/", LISTED[0]]
    response = await post(client, {"cc": "XL", "urls": urls})
    assert response.status == 200, await response.text()
    answer = SightingAnswer.model_validate(await response.json())
    assert answer.accepted == [LISTED[0]]
    assert [(r.url, r.reason) for r in answer.rejected] == [
        ("http://elsewhere.lab/", NOT_LISTED),
        ("ftp://s1.lab/", INVALID_INPUT),
        ("http://[::1/", INVALID_INPUT),
    ]
    assert await listed_now(client) == [LISTED[0]]
    assert await listed_now(client, "KH") == []  # another country's agents are not sent
    assert counted(client, "accepted") == 1


@pytest.mark.parametrize(
    ("body", "status", "error", "result"),
    [
        (b"{not json", 400, INVALID_JSON, "bad_request"),
        ({"cc": "XL"}, 422, INVALID_REQUEST, "invalid"),
        ({"cc": "XL", "urls": []}, 422, INVALID_REQUEST, "invalid"),
        ({"cc": "XLX", "urls": [LISTED[0]]}, 422, INVALID_REQUEST, "invalid"),
        ({"cc": "XL", "urls": LISTED[: MAX_SIGHTING_URLS + 1]}, 422, INVALID_REQUEST, "invalid"),
        ({"cc": "XL", "urls": [LISTED[0]], "probe_asn": "AS1"}, 422, INVALID_REQUEST, "invalid"),
        ({"cc": WITHHELD_CC, "urls": [LISTED[0]]}, 422, INVALID_CC, "invalid"),
        ({"cc": "XL", "urls": ["http://elsewhere.lab/"]}, 422, NOTHING_LISTABLE, "rejected"),
        (b"{}" + b" " * MAX_SIGHTING_BODY, 413, BODY_TOO_LARGE, "too_large"),
    ],
)
async def test_a_bad_sighting_is_refused_with_its_reason_and_counted(
    sighting_client: Any, body: Any, status: int, error: str, result: str
) -> None:
    response = await post(sighting_client, body)
    assert response.status == status, await response.text()
    assert (await response.json())["error"] == error
    assert counted(sighting_client, result) == 1
    assert await listed_now(sighting_client) == []


async def test_a_padded_body_up_to_the_cap_is_read(sighting_client: Any) -> None:
    body = json.dumps({"cc": "XL", "urls": [LISTED[0]]}).encode()
    response = await post(sighting_client, body + b" " * (MAX_SIGHTING_BODY - len(body)))
    assert response.status == 200


async def test_sightings_cannot_flood_the_list_nor_displace_judged_urls(
    sighting_client: Any, sign: Any, make_measurement: Any
) -> None:
    client = sighting_client
    judged = [blocked(make_measurement, url) for url in LISTED[:MAX_CONFIRM_URLS]]
    response = await client.post("/api/v1/measurements", json={"measurements": [sign(m) for m in judged]})
    assert response.status == 200
    judged_urls = await listed_now(client)
    assert sorted(judged_urls) == sorted(LISTED[:MAX_CONFIRM_URLS])
    # a liar sights every other listed URL, in batches: at most MAX_SIGHTING_URLS of them are listed, after
    # every judged one
    rest = LISTED[MAX_CONFIRM_URLS:]
    for start in range(0, len(rest), MAX_SIGHTING_URLS):
        assert (
            await post(client, {"cc": "XL", "urls": rest[start : start + MAX_SIGHTING_URLS]})
        ).status == 200
    both = await listed_now(client)
    assert both[:MAX_CONFIRM_URLS] == judged_urls
    assert both[MAX_CONFIRM_URLS:] == list(reversed(rest))[:MAX_SIGHTING_URLS]  # the newest sighted
    # sighting a judged URL again neither moves nor duplicates it
    assert (await post(client, {"cc": "XL", "urls": judged_urls[-3:]})).status == 200
    assert (await listed_now(client))[:MAX_CONFIRM_URLS] == judged_urls
    assert len(set(await listed_now(client))) == len(await listed_now(client)) == MAX_CONFIRM_LIST


async def test_sightings_are_rate_limited_per_country(sighting_client: Any) -> None:
    client = sighting_client
    answers = [
        (await post(client, {"cc": "XL", "urls": [LISTED[0]]})).status for _ in range(SIGHTING_BURST + 1)
    ]
    assert answers == [200] * SIGHTING_BURST + [429]
    assert counted(client, RATE_LIMITED) == 1
    assert (await post(client, {"cc": "KH", "urls": [LISTED[0]]})).status == 200  # another country's own


async def test_nothing_of_the_sender_reaches_the_logs_or_the_metrics(
    sighting_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for body in ({"cc": "XL", "urls": [LISTED[0]]}, {"cc": "XL", "urls": ["http://x/"]}, b"{", b"x" * 20000):
        await post(sighting_client, body)
    metrics = await (await sighting_client.get("/metrics")).text()
    logged = caplog.text + "".join(json.dumps(vars(record), default=str) for record in caplog.records)
    assert "/api/v1/confirm" in logged  # the access log was written (without the client)
    assert "gatewatch_sightings_total" in metrics
    for spelling in (SENDER, "127.0.0.1"):
        assert spelling not in logged and spelling not in metrics


def test_sighted_urls_have_their_own_shorter_window_and_bound() -> None:
    now = [1000.0]
    board = ConfirmationBoard(clock=lambda: now[0])
    board.add_sighting("XL", LISTED[:15])
    assert board.urls("XL", lambda url: True) == list(reversed(LISTED[5:15]))  # the newest 10
    assert board.urls("KH", lambda url: True) == []
    now[0] += SIGHTING_WINDOW / 2
    board.add_sighting("XL", [LISTED[5]])  # seen again: stays, newest
    now[0] += SIGHTING_WINDOW / 2 + 1
    assert board.urls("XL", lambda url: True) == [LISTED[5]]
    assert board.urls("XL", lambda url: url != LISTED[5]) == []  # only what the test list allows
    now[0] += SIGHTING_WINDOW
    assert board.urls("XL", lambda url: True) == []
    assert SIGHTING_WINDOW < CONFIRM_WINDOW

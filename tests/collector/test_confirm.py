"""Confirmation requests: an anomaly accepted from one network lists its (test-list) URL for the country's
other agents; nothing else is listed, nothing about the reporter is said, and the listing expires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatewatch.collector.app import create_app
from gatewatch.collector.confirm import CONFIRM_WINDOW, ConfirmationBoard
from gatewatch.collector.settings import Settings
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSQuery
from gatewatch.core.wire import ConfirmationList

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

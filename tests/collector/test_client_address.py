"""The client's address behind trusted proxies, observed through the real app: ``GET /api/v1/geolocate``
echoes it (``probe_ip``) and geolocates it, and ingest's mismatch flags use it. Clients bind lab vantage
addresses (all in 127.0.0.0/8); forwarding headers only carry addresses as text."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.collector.settings import Settings, SettingsError, load_settings
from gatewatch.collector.store import MeasurementFilter
from gatewatch.lab import NETWORKS, Lab

from .conftest import CONTROL_SECRET

PROXY = "127.65.0.10"  # in isp-a's range, which these tests declare to be the operator's load balancer
OUTSIDER = "127.66.0.10"  # in isp-b's range: not a proxy
ISP_B = NETWORKS["isp-b"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    lab = Lab()  # only its address plan: nothing is started
    asn, country = tmp_path / "asn.csv", tmp_path / "country.csv"
    lab.write_asn_csv(asn)
    lab.write_country_csv(country)
    return Settings(
        db=f"sqlite:///{tmp_path / 'c.db'}",
        asn_db=(asn,),
        country_db=(country,),
        trusted_proxies=("127.65.0.0/16", "127.70.0.0/16"),
        accept_identified=True,
        control_signing_secret=CONTROL_SECRET,
    )


@pytest.fixture
def connect_from(aiohttp_client, settings: Settings):
    async def connect(source: str, app_settings: Settings | None = None):
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        return await aiohttp_client(create_app(app_settings or settings), connector=connector)

    return connect


async def seen_as(client, headers: dict[str, str] | list[tuple[str, str]]) -> str:
    response = await client.get("/api/v1/geolocate", headers=headers)
    assert response.status == 200, await response.text()
    return (await response.json())["probe_ip"]


async def test_a_trusted_proxy_names_the_client(connect_from) -> None:
    client = await connect_from(PROXY)
    response = await client.get("/api/v1/geolocate", headers={"X-Forwarded-For": ISP_B.source_address})
    body = await response.json()
    # The client's network, not the proxy's.
    assert body == {
        "probe_asn": f"AS{ISP_B.asn}",
        "probe_cc": ISP_B.cc,
        "probe_network_name": ISP_B.network_name,
        "probe_ip": ISP_B.source_address,
    }


async def test_anyone_else_cannot_choose_its_address(connect_from) -> None:
    client = await connect_from(OUTSIDER)
    assert await seen_as(client, {"X-Forwarded-For": "127.1.2.3"}) == OUTSIDER
    assert await seen_as(client, {"Forwarded": "for=127.1.2.3"}) == OUTSIDER


async def test_without_trusted_proxies_the_headers_are_ignored(connect_from, settings) -> None:
    client = await connect_from(
        PROXY, Settings(db=settings.db, accept_identified=True, control_signing_secret=CONTROL_SECRET)
    )
    assert await seen_as(client, {"X-Forwarded-For": "127.1.2.3"}) == PROXY


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # the right-most address that is not one of our proxies; what is left of it is the client's say
        ({"X-Forwarded-For": "127.9.9.9, 127.66.0.9, 127.70.0.1"}, "127.66.0.9"),
        ({"X-Forwarded-For": "127.66.0.9:5555"}, "127.66.0.9"),
        ({"X-Forwarded-For": "[2001:db8::7]:443"}, "2001:db8::7"),
        ({"X-Forwarded-For": " 2001:db8::7 "}, "2001:db8::7"),
        ([("X-Forwarded-For", "127.9.9.9"), ("X-Forwarded-For", "127.66.0.9, 127.70.0.1")], "127.66.0.9"),
        # every hop is one of ours: the request began inside
        ({"X-Forwarded-For": "127.70.0.2, 127.70.0.1"}, "127.70.0.2"),
        ({"Forwarded": 'for="[2001:db8::7]:4711";proto=https;by=127.70.0.1'}, "2001:db8::7"),
        ({"Forwarded": "for=127.9.9.9, For=127.66.0.9;proto=http"}, "127.66.0.9"),
        # X-Forwarded-For wins: the usual proxies pass a client's Forwarded through untouched
        ({"Forwarded": "for=127.9.9.9", "X-Forwarded-For": "127.66.0.9"}, "127.66.0.9"),
    ],
)
async def test_forwarding_headers(connect_from, headers, expected: str) -> None:
    client = await connect_from(PROXY)
    assert await seen_as(client, headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "not an address"},
        {"X-Forwarded-For": ""},
        {"X-Forwarded-For": ",,,"},
        {"X-Forwarded-For": "unknown"},
        {"X-Forwarded-For": "127.9.9.9, garbage"},
        {"X-Forwarded-For": "[2001:db8::7"},
        {"X-Forwarded-For": "999.1.1.1"},
        {"Forwarded": "for=_hidden"},
        {"Forwarded": "proto=https"},
        {"Forwarded": ";;=;=="},
        # more hops than any real proxy path, all ours: what lies beyond them is not looked at
        {"X-Forwarded-For": "127.66.0.9" + ", 127.70.0.1" * 500},
    ],
)
async def test_garbage_leaves_the_peer(connect_from, headers) -> None:
    client = await connect_from(PROXY)
    assert await seen_as(client, headers) == PROXY


async def test_ingest_flags_claims_against_the_forwarded_client(connect_from, sign, make_measurement) -> None:
    client = await connect_from(PROXY)
    claims_b = make_measurement(probe_asn=f"AS{ISP_B.asn}", probe_cc=ISP_B.cc)
    claims_a = make_measurement(probe_asn=f"AS{NETWORKS['isp-a'].asn}", probe_cc=NETWORKS["isp-a"].cc)
    response = await client.post(
        "/api/v1/measurements",
        json={"measurements": [sign(claims_b), sign(claims_a)]},
        headers={"X-Forwarded-For": ISP_B.source_address},
    )
    assert response.status == 200
    assert [r["status"] for r in (await response.json())["results"]] == ["accepted", "accepted"]
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 10)
    flags = {r.measurement_uid: r.flags for r in rows}
    # Judged against isp-b (the client), not isp-a (the proxy the connection came from).
    assert flags[claims_b.measurement_uid] == ()
    assert "asn_mismatch" in flags[claims_a.measurement_uid]


def test_the_setting_takes_cidrs_from_every_source() -> None:
    env = {"GATEWATCH_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"}
    assert load_settings(env=env).trusted_proxies == ("10.0.0.0/8", "fd00::/8")
    assert load_settings({"trusted_proxies": ["192.0.2.1"]}, env={}).trusted_proxies == ("192.0.2.1",)
    assert Settings().trusted_proxies == ()  # nobody is believed unless the operator says so
    with pytest.raises(SettingsError, match="trusted_proxies"):
        Settings(trusted_proxies=("lb.internal",))

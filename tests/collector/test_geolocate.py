"""``GET /api/v1/geolocate`` through the real app: clients bind lab vantage addresses (all in 127.0.0.0/8)
and are looked up in the lab's ip-location-db CSVs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gatewatch.collector.app import create_app
from gatewatch.collector.settings import Settings
from gatewatch.lab import NETWORKS, Lab

PATH = "/api/v1/geolocate"


@pytest.fixture
def lab_geo(tmp_path: Path) -> tuple[Path, Path]:
    lab = Lab()  # only its address plan: nothing is started
    asn, country = tmp_path / "asn.csv", tmp_path / "country.csv"
    lab.write_asn_csv(asn)
    lab.write_country_csv(country)
    return asn, country


async def geolocate_from(aiohttp_client, settings: Settings, source: str) -> tuple[int, dict, str]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    client = await aiohttp_client(create_app(settings), connector=connector)
    response = await client.get(PATH)
    return response.status, await response.json(), response.headers.get("Cache-Control", "")


@pytest.mark.parametrize("network", ["isp-a", "isp-b", "isp-c", "clean"])
async def test_the_callers_network_from_the_databases(aiohttp_client, tmp_path, lab_geo, network) -> None:
    asn, country = lab_geo
    settings = Settings(db=f"sqlite:///{tmp_path / 'g.db'}", asn_db=(asn,), country_db=(country,))
    vantage = NETWORKS[network]
    status, body, cache = await geolocate_from(aiohttp_client, settings, vantage.source_address)
    assert status == 200
    assert body == {
        "probe_asn": f"AS{vantage.asn}",
        "probe_cc": vantage.cc,
        "probe_network_name": vantage.network_name,
        # echoed so that the agent can scrub its own address from what it measures
        "probe_ip": vantage.source_address,
    }
    assert cache == "no-store"


async def test_an_address_the_databases_do_not_cover(aiohttp_client, tmp_path, lab_geo) -> None:
    asn, country = lab_geo
    settings = Settings(db=f"sqlite:///{tmp_path / 'g.db'}", asn_db=(asn,), country_db=(country,))
    status, body, _ = await geolocate_from(aiohttp_client, settings, "127.200.0.7")
    assert status == 200
    assert body == {"probe_asn": "AS0", "probe_cc": "ZZ", "probe_network_name": "", "probe_ip": "127.200.0.7"}


async def test_without_databases_everything_is_unknown(aiohttp_client, tmp_path) -> None:
    settings = Settings(db=f"sqlite:///{tmp_path / 'g.db'}")
    status, body, _ = await geolocate_from(aiohttp_client, settings, "127.65.0.10")
    assert status == 200
    assert body == {"probe_asn": "AS0", "probe_cc": "ZZ", "probe_network_name": "", "probe_ip": "127.65.0.10"}


async def test_a_country_without_an_asn(aiohttp_client, tmp_path) -> None:
    country = tmp_path / "country.csv"
    country.write_text("127.0.0.0,127.255.255.255,xa\n")
    settings = Settings(db=f"sqlite:///{tmp_path / 'g.db'}", country_db=(country,))
    status, body, _ = await geolocate_from(aiohttp_client, settings, "127.65.0.10")
    assert status == 200
    assert (body["probe_asn"], body["probe_cc"], body["probe_network_name"]) == ("AS0", "XA", "")

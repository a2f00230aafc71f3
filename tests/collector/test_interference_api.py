"""Interference attribution through the app: measurements from two lab ISPs behind the same emulated
gateway are signed, uploaded and judged; ``GET /api/v1/interference`` and ``/metrics`` show the scope, and
a collector restarted on the same database shows it again (the aggregate is rebuilt from the store).

The controls come from the app's own ``POST /api/v1/control`` (allowed into the lab's loopback ranges).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatewatch.collector.app import create_app
from gatewatch.collector.interference_api import AGGREGATE_KEY, attribution_settings
from gatewatch.collector.settings import Settings
from gatewatch.core.control import ControlObservations
from gatewatch.core.measurement import Measurement
from gatewatch.lab import NETWORKS, Lab
from gatewatch.probes.web import measure

pytestmark = pytest.mark.lab

PATH = "/api/v1/interference"
DOMAINS = ("blockpage.lab", "isp-blockpage.lab", "clean.lab")


def settings_for(tmp_path: Path, lab: Lab) -> Settings:
    return Settings(
        db=f"sqlite:///{tmp_path / 'interference.db'}",
        control_resolver=lab.resolver,
        ca_file=lab.ca_file,
        control_allow_net=("127.0.0.0/8",),
        accept_identified=True,
    )


async def upload_lab_measurements(
    client: Any, lab: Lab, make_measurement: Callable[..., Measurement], sign: Callable[..., dict]
) -> list[str]:
    """Each domain measured once from isp-a and once from isp-b, against the app's own control."""
    envelopes = []
    for domain in DOMAINS:
        url = lab.url(domain)
        response = await client.post("/api/v1/control", json={"input": url})
        assert response.status == 200
        control = ControlObservations.model_validate(await response.json())
        for network in ("isp-a", "isp-b"):
            keys = await measure(url, lab.web_config(network))
            keys.control = control
            vantage = NETWORKS[network]
            m = make_measurement(input=url, probe_asn=f"AS{vantage.asn}", probe_cc=vantage.cc, test_keys=keys)
            envelopes.append(sign(m))
    response = await client.post("/api/v1/measurements", json={"measurements": envelopes})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == ["accepted"] * len(envelopes), results
    return [r["measurement_uid"] for r in results]


async def interference(client: Any, query: str = "cc=XL") -> dict[str, dict[str, Any]]:
    response = await client.get(f"{PATH}?{query}")
    assert response.status == 200, await response.text()
    return {row["domain"]: row for row in (await response.json())["results"]}


async def scope_series(client: Any) -> dict[str, str]:
    """domain -> scope label of gatewatch_interference_scope, as Prometheus would scrape it."""
    text = await (await client.get("/metrics")).text()
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gatewatch_interference_scope":
            for sample in family.samples:
                if sample.value == 1:
                    found[sample.labels["domain"]] = sample.labels["scope"]
    return found


async def test_gateway_and_isp_rows_survive_a_restart(
    aiohttp_client, tmp_path: Path, make_measurement, sign
) -> None:
    async with await Lab.start() as lab:
        settings = settings_for(tmp_path, lab)
        client = await aiohttp_client(create_app(settings))
        uids = await upload_lab_measurements(client, lab, make_measurement, sign)

        rows = await interference(client)
        assert set(rows) == {"blockpage.lab", "isp-blockpage.lab"}  # clean.lab is "none": not by default
        gateway = rows["blockpage.lab"]
        assert (gateway["scope"], gateway["rule_id"]) == ("gateway", "scope.gateway.same_fingerprint")
        assert (gateway["networks_affected"], gateway["networks_measured"]) == (2, 2)
        assert gateway["technique"] == "http.blockpage" and gateway["fingerprint_key"]
        assert set(gateway["example_measurement_uids"]) <= set(uids)
        assert {n["asn"] for n in gateway["networks"]} == {"AS64501", "AS64502"}
        isp = rows["isp-blockpage.lab"]
        assert (isp["scope"], isp["networks_affected"], isp["networks_measured"]) == ("isp", 1, 2)
        assert await scope_series(client) == {"blockpage.lab": "gateway", "isp-blockpage.lab": "isp"}
        await client.close()

    # A new application on the same database: everything it knows comes from the store.
    restarted = await aiohttp_client(create_app(settings))
    assert restarted.app[AGGREGATE_KEY].pending == 0  # rebuilt and judged before serving
    again = await interference(restarted)
    assert {d: (r["scope"], r["fingerprint_key"]) for d, r in again.items()} == {
        d: (r["scope"], r["fingerprint_key"]) for d, r in rows.items()
    }
    assert await scope_series(restarted) == {"blockpage.lab": "gateway", "isp-blockpage.lab": "isp"}

    everything = await interference(restarted, "cc=xl&scope=all")
    assert everything["clean.lab"]["scope"] == "none"
    assert set(everything) == set(DOMAINS)
    only_isp = await interference(restarted, "cc=XL&scope=isp")
    assert set(only_isp) == {"isp-blockpage.lab"}
    assert await interference(restarted, "cc=KH") == {}
    assert set(await interference(restarted, "")) == {"blockpage.lab", "isp-blockpage.lab"}


@pytest.mark.parametrize(
    "query", ["cc=XLX", "cc=1", "cc=", "scope=global", "scope=gateway,sometimes", "per=path", "per="]
)
async def test_bad_queries_are_400(aiohttp_client, tmp_path: Path, query: str) -> None:
    client = await aiohttp_client(
        create_app(Settings(db=f"sqlite:///{tmp_path / 'i.db'}", accept_identified=True))
    )
    response = await client.get(f"{PATH}?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "bad_request" and body["detail"]


def test_attribution_settings_come_from_the_collectors() -> None:
    settings = Settings(
        attribution_window_seconds=3600, attribution_min_networks=3, attribution_gateway_share=0.5
    )
    attribution = attribution_settings(settings)
    assert attribution.window == timedelta(hours=1)
    assert (attribution.min_networks_gateway, attribution.gateway_share) == (3, 0.5)


async def test_rows_older_than_the_window_are_not_rebuilt(
    aiohttp_client, tmp_path: Path, make_measurement, sign
) -> None:
    async with await Lab.start() as lab:
        settings = settings_for(tmp_path, lab)
        client = await aiohttp_client(create_app(settings))
        await upload_lab_measurements(client, lab, make_measurement, sign)
        await client.close()
    await asyncio.sleep(1.1)
    # A one-second window: on restart, nothing stored is recent enough to count.
    short = dataclasses.replace(settings, attribution_window_seconds=1.0)
    restarted = await aiohttp_client(create_app(short))
    assert await interference(restarted, "cc=XL&scope=all") == {}

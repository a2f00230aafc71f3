"""A real Prometheus (Debian's package) scraping a real /metrics endpoint on loopback: every dashboard
panel query returns data, and the alert rules load and start evaluating.

The collector's app is not needed here: the endpoint serves the same registry wiring (ingest metrics and
the interference collector over an aggregate fed synthetic rows). The full path through agents and the
emulated network is the end-to-end test's job.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gatewatch.collector.aggregate import InterferenceAggregate
from gatewatch.collector.metrics import (
    ControlMetrics,
    IngestMetrics,
    SightingMetrics,
    TokenMetrics,
    metrics_response,
)
from gatewatch.collector.metrics_interference import register_interference_metrics

from ..conftest import traced_payload

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
_uids = iter(range(10**9))


def row(
    asn: str, domain: str, blocked: bool, technique: str = "dns.injection", key: str = "k1"
) -> SimpleNamespace:
    now = datetime.now(UTC)
    return SimpleNamespace(
        measurement_uid=f"uid-{next(_uids)}",
        measurement_start_time=now - timedelta(seconds=30),
        received_at=now,
        probe_cc="XL",
        probe_asn=asn,
        test_name="web",
        input=f"http://{domain}/",
        domain=domain,
        blocking="dns" if blocked else "false",
        anomaly=blocked,
        technique=technique if blocked else None,
        fingerprint_key=key if blocked else None,
        flags=(),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = await asyncio.to_thread(get, url)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


async def test_every_panel_query_returns_data(generator: ModuleType, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (CI installs Debian's prometheus from .ci/run)")
    registry = CollectorRegistry()
    aggregate = InterferenceAggregate(refresh_interval=0.5)
    register_interference_metrics(registry, aggregate)
    ingest = IngestMetrics.register(registry)
    TokenMetrics.register(registry)
    controls = ControlMetrics.register(registry)
    SightingMetrics.register(registry)  # the collector-health panel of sightings
    # a gateway-level block (same fingerprint in both networks) and an ISP-level one (one network only)
    # (both located the same injector by packet traces: the packet-evidence table's data)
    gateway_rows = [row("AS64501", "gw.lab", True), row("AS64502", "gw.lab", True)]
    gateway_rows[0].payload, gateway_rows[1].payload = traced_payload(3, 59), traced_payload(2, 60)
    aggregate.add_rows(gateway_rows)
    aggregate.add_rows([row("AS64501", "isp.lab", True, "tls.reset", "k2"), row("AS64502", "isp.lab", False)])

    async def metrics(_request: web.Request) -> web.Response:
        return await metrics_response(registry)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    collector_port, prometheus_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", collector_port).start()
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: gatewatch-collector\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{collector_port}']}}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # a few scrapes, with ingest moving between them so that rate() has something to show
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ingest.requests.labels(result="ok").inc()
            ingest.items.labels(result="accepted", reason="").inc(2)
            ingest.request_seconds.observe(0.02)
            ingest.store_seconds.labels(operation="insert").observe(0.002)
            ingest.last_accepted.set(time.time())
            controls.count("vouched", None)
            controls.count("own_cache", "absent")
            aggregate.add_rows([row("AS64501", "gw.lab", True), row("AS64502", "clean.lab", False)])
            await asyncio.sleep(1)
            try:
                scrapes = await query(prometheus_port, 'count_over_time(up{job="gatewatch-collector"}[1m])')
            except OSError:
                continue  # not listening yet
            if scrapes and float(scrapes[0]["value"][1]) >= 5:
                break
        else:
            pytest.fail("Prometheus did not scrape the endpoint five times within 30 s")

        empty = []
        for q in generator.panel_queries({"cc": "XL", "asn": ".*", "__rate_interval": "10s"}):
            if not await query(prometheus_port, q.expr):
                empty.append(f"{q.dashboard} / {q.panel} / {q.ref_id}: {q.expr}")
        assert not empty, "panel queries without data:\n" + "\n".join(empty)

        scopes = {
            r["metric"]["domain"]: r["metric"]["scope"]
            for r in await query(prometheus_port, 'gatewatch_interference_scope{cc="XL"}')
        }
        assert scopes == {"gw.lab": "gateway", "isp.lab": "isp"}
        pending = await query(prometheus_port, 'ALERTS{alertname="GatewayInterferenceBegan"}')
        assert [r["metric"]["alertstate"] for r in pending] == ["pending"]  # `for: 5m` has not passed
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout=5)
        await runner.cleanup()

"""The operators' view, whole: a real Prometheus scrapes the live collector while agents in isp-a and
isp-b upload through the lab. Every panel query of every dashboard returns data through Prometheus' HTTP
API, and attribution tells the national gateway's blocks from the one ISP's block, in the API and in the
series Grafana reads."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.agent.batches import TokenBatches
from gatewatch.agent.collector_api import make_session
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.tokens import TokenWallet, TopUpPolicy
from gatewatch.lab.lab import Lab

from .conftest import CENSORED, NetworkPass
from .harness import CollectorProcess, finish_agent, free_port, http_get, start_agent

pytestmark = [pytest.mark.lab, pytest.mark.prometheus, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "30s"  # $__rate_interval for a 1 s scrape: several samples, all of this test's ingest
DEADLINE = 45.0  # seconds for any one thing to show up in Prometheus


def load_generator() -> ModuleType:
    """dashboards/generate.py is a script, not a package: load it from its path."""
    name = "gatewatch_dashboards_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "dashboards" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look the module up while they are built
        spec.loader.exec_module(module)
    return sys.modules[name]


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        (workdir / "alerts.yml").write_text(ALERTS.read_text())
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_INTERVAL}, evaluation_interval: {SCRAPE_INTERVAL}}}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: gatewatch-collector\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("w"),
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url, timeout=10)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        """Poll until ``check()`` holds (Prometheus not listening yet counts as not yet)."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "prometheus exited"
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"Prometheus: {what} within {DEADLINE:g} s")

    def samples(self, selector: str) -> int:
        """How many samples of the (single) series ``selector`` Prometheus holds from the last minute."""
        found = self.query(f"count_over_time({selector}[1m])")
        return int(float(found[0]["value"][1])) if found else 0

    def scrapes(self) -> int:
        return self.samples('up{job="gatewatch-collector"}')

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def prometheus(collector: CollectorProcess, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (CI installs Debian's prometheus from .ci/run)")
    server = Prometheus(binary, tmp_path, f"127.0.0.1:{collector.port}")
    try:
        yield server
    finally:
        server.stop()


def post_tampered(collector: CollectorProcess, done: NetworkPass, workdir: Path) -> dict[str, Any]:
    """A submission whose payload no longer matches its signature, as from a broken or forging client
    holding a valid token (the real agent's wallet and batch, then the payload altered): the collector
    must refuse the item, and the health dashboard shows the refusal."""
    with MeasurementQueue(done.queue_path) as queue:
        [row] = queue.recent(1)

    async def forge() -> dict[str, Any]:
        with MeasurementQueue(workdir / "forger.sqlite3") as forger:
            wallet = TokenWallet(forger)
            async with make_session() as session:
                await wallet.top_up(session, [collector.url], Ed25519PrivateKey.generate(), TopUpPolicy(1, 1))
            forger.enqueue(row.measurement_uid, row.payload, None)
            batch = TokenBatches(forger, wallet).seal(forger.pending(1, unbatched=True))
        assert batch is not None
        envelope = batch[0].envelope.model_dump()
        envelope["payload"] = base64.b64encode(
            row.payload.replace(b'"probe_cc":"XL"', b'"probe_cc":"ZZ"')
        ).decode()
        assert envelope["payload"] != batch[0].envelope.payload
        return {"measurements": [envelope], "token": batch.token.model_dump()}

    request = urllib.request.Request(
        collector.url + "/api/v1/measurements",
        data=json.dumps(asyncio.run(forge())).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def expected_scopes(lab: Lab) -> dict[str, str]:
    return {d.name: d.expected_scope for d in lab.scenario.domains}


def test_every_panel_has_data_and_gateway_is_told_from_isp(
    lab: Lab,
    collector: CollectorProcess,
    passes: dict[str, NetworkPass],
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    generator = load_generator()
    prometheus.wait_for("three scrapes of the collector", lambda: prometheus.scrapes() >= 3)
    before = prometheus.scrapes()

    # While Prometheus watches: the volunteers measure again (skipping the blackholed site, whose connect
    # only times out), and a forged submission is refused.
    inputs = [url for url in lab.urls() if "blackhole.lab" not in url]
    running = [start_agent(lab, n, passes[n].data_dir, collector.url, inputs) for n in CENSORED]
    for network, process in zip(CENSORED, running, strict=True):
        run = finish_agent(process)
        assert run.returncode == 0, f"{network}:\n{run.stdout}\n{run.stderr}"
    [refused] = post_tampered(collector, passes["isp-a"], tmp_path)["results"]
    assert refused["status"] == "rejected", refused
    # rate() needs two samples of a series in its window: wait for several scrapes of the newest one.
    prometheus.wait_for(
        "the refusal and the new measurements scraped",
        lambda: (
            prometheus.samples('gatewatch_ingest_items_total{result="rejected"}') >= 3
            and prometheus.scrapes() >= before + 5
        ),
    )

    # Attribution, from the API: the scenario's gateway-level domains are "gateway", its ISP-only one "isp".
    expected = {d: s for d, s in expected_scopes(lab).items() if s in ("gateway", "isp")}
    assert "gateway" in expected.values() and "isp" in expected.values()

    def api_scopes() -> dict[str, str]:
        rows = collector.get_json("/api/v1/interference?cc=XL")["results"]
        return {r["domain"]: r["scope"] for r in rows if r["domain"] in expected_scopes(lab)}

    def series_scopes() -> dict[str, str]:
        found = prometheus.query('gatewatch_interference_scope{cc="XL"}')
        return {
            r["metric"]["domain"]: r["metric"]["scope"]
            for r in found
            if r["metric"]["domain"] in expected_scopes(lab)
        }

    # The aggregate refreshes its verdicts every few seconds and Prometheus scrapes every second: poll.
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and (api_scopes(), series_scopes()) != (expected, expected):
        time.sleep(0.5)
    assert api_scopes() == expected, collector.get_json("/api/v1/interference?cc=XL&scope=all")
    assert series_scopes() == expected, prometheus.query("gatewatch_interference_scope")
    affected = {
        r["metric"]["domain"]: float(r["value"][1])
        for r in prometheus.query('gatewatch_interference_networks_affected{cc="XL"}')
    }
    assert all(affected[d] == (2 if s == "gateway" else 1) for d, s in expected.items()), affected

    # Every panel query of every dashboard, as Grafana would send it with the country's variables filled in.
    empty = []
    for asn in ("AS64501|AS64502", "AS64501"):
        variables = {"cc": "XL", "asn": asn, "__rate_interval": RATE_WINDOW}
        for q in generator.panel_queries(variables):
            if "gatewatch_interference_packet_evidence" in q.expr:
                continue  # the loopback lab's agents take no packet traces (tests/lab/netns does)
            if not prometheus.query(q.expr):
                empty.append(f"{q.dashboard} / {q.panel} / {q.ref_id} (asn={asn}): {q.expr}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    # and the rates are of real traffic, not zeros
    rate = prometheus.query(f'sum by (cc) (rate(gatewatch_measurements_total{{cc="XL"}}[{RATE_WINDOW}]))')
    assert rate and float(rate[0]["value"][1]) > 0, rate

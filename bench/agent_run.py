"""Agent pipeline cost on the 1,900-URL list (kh + global): peak RSS and wall time of a pass.

What it measures: everything the agent does around the probe (test-list parsing, scrubbing, signing,
the SQLite queue with fsync, control requests and batched upload to a collector on 127.0.0.1). The probe
is replaced by a recorded measurement with a ``--probe-delay`` sleep standing for the network round
trips, so the wall time can be compared with the round-trip bound (URLs x delay / concurrency). The run
through the emulated censored network with the real probes is the lead's end-to-end benchmark.

    python bench/agent_run.py [--lists ../shared/data/test-lists] [--concurrency 16] [--probe-delay 0.05]

Prints figures; asserts nothing. Checks that scapy was never imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.run_records import RunOptions
from gatewatch.agent.runner import run_pass
from gatewatch.agent.testlists import read_test_list
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import (
    DNSAnswer,
    DNSQuery,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
)
from gatewatch.probes.config import WebConfig
from gatewatch.probes.trace import Trace

REPO = Path(__file__).resolve().parent.parent
OWN = "203.0.113.7"


def recorded_keys(url: str) -> WebTestKeys:
    # One page in fifty echoes the visitor's address (as "what is my IP" pages do); the rest do not.
    echo = OWN if hash(url) % 50 == 0 else "visitor"
    body = f"<html><title>page</title><p>hello {echo}</p>" + "x" * 20_000 + "</html>"
    return WebTestKeys(
        queries=[DNSQuery(resolver_address="192.168.1.1:53", hostname="h", query_type="A", t0=0, t=0.01,
                          answers=[DNSAnswer(answer_type="A", ipv4="198.51.100.10")])],
        tcp_connect=[TCPConnect(ip="198.51.100.10", port=80, t0=0.01, t=0.02, success=True)],
        requests=[HTTPTransaction(t0=0.02, t=0.05, request=HTTPRequest(url=url),
                                  response=HTTPResponse(code=200, headers=[("X-IP", OWN)], body=body,
                                                        body_length=len(body), title="page"))],
    )  # fmt: skip


def collector_app(stats: dict[str, int]) -> web.Application:
    control = ControlObservations(
        dns=ControlDNS(addrs=["198.51.100.10"]), http_request=ControlHTTP(status_code=200)
    )

    async def geolocate(request: web.Request) -> web.Response:
        return web.json_response(
            {"probe_asn": "AS64501", "probe_cc": "XL", "probe_network_name": "", "probe_ip": OWN}
        )

    async def control_handler(request: web.Request) -> web.Response:
        stats["control"] += 1
        return web.json_response(control.model_dump(mode="json"))

    async def measurements(request: web.Request) -> web.Response:
        items = (await request.json())["measurements"]
        stats["uploaded"] += len(items)
        results = [
            {"index": i, "measurement_uid": None, "status": "accepted", "reason": None}
            for i in range(len(items))
        ]
        return web.json_response({"results": results})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/api/v1/geolocate", geolocate)
    app.router.add_post("/api/v1/control", control_handler)
    app.router.add_post("/api/v1/measurements", measurements)
    return app


async def main(args: argparse.Namespace) -> None:
    seen: set[str] = set()
    entries = []
    for name in ("kh.csv", "global.csv"):
        entries += read_test_list(args.lists / name, seen=seen).entries

    async def measure(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        # As the probe does: the addresses once its DNS answered (the control is asked then), the network
        # done once its connections are closed (the pass starts its next URL then).
        if on_resolved is not None:
            on_resolved(["198.51.100.10"])
        await asyncio.sleep(args.probe_delay)
        if on_network_done is not None:
            on_network_done()
        return recorded_keys(url)

    def no_analysis(url, keys, control, fingerprints):  # the analysis has its own benchmark
        return None

    stats = {"control": 0, "uploaded": 0}
    runner = web.AppRunner(collector_app(stats), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # A lab run (127.0.0.0/8 counts as public, route lookups stay on loopback), and the resolver is a
    # closed port on loopback: the only DNS this run asks (the reverse names of its own addresses) must
    # not leave the machine.
    options = RunOptions(collector_urls=(f"http://127.0.0.1:{port}/",), concurrency=args.concurrency,
                         per_host=2, max_runtime=None, resolver="127.0.0.1:9",
                         routable=("127.0.0.0/8",), route_probes=("127.0.0.1",))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, MeasurementQueue(Path(tmp) / "q.sqlite3") as queue:
        started = time.perf_counter()
        summary = await run_pass(entries, options, queue, Ed25519PrivateKey.generate(), measure=measure,
                                 analyse=no_analysis)  # fmt: skip
        wall = time.perf_counter() - started
        queue_mb = (Path(tmp) / "q.sqlite3").stat().st_size / 1e6
    await runner.cleanup()
    bound = len(entries) * args.probe_delay / args.concurrency
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "urls": len(entries),
        "measured": summary.measured,
        "uploaded": stats["uploaded"],
        "wall_s": round(wall, 2),
        "round_trip_bound_s": round(bound, 2),
        "wall_over_bound": round(wall / bound, 2) if bound else None,
        "per_measurement_ms": round(1000 * wall / max(1, summary.measured), 2),
        "peak_rss_mb": round(peak_mb, 1),
        "queue_file_mb": round(queue_mb, 1),
        "scapy_imported": "scapy" in sys.modules,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=Path, default=REPO.parent / "shared" / "data" / "test-lists")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--probe-delay", type=float, default=0.05)
    asyncio.run(main(parser.parse_args()))

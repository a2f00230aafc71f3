"""Ingest throughput through the real application, next to the bare Ed25519 verification rate.

    python bench/ingest.py                    # 5,000 measurements in batches of 100, SQLite
    python bench/ingest.py --count 20000 --concurrency 4

The collector runs in this process behind a real TCP listener on 127.0.0.1 (routing, middlewares,
verification, validation, re-analysis, durable SQLite commit, metrics), and the client uploads
pre-signed measurements over loopback. The same payloads are then verified bare (one Ed25519 check each)
and through ``envelope.verify`` (base64 and checks included), so the ratio shows how much of ingest is
the signature. The measurements look like a real page load: DNS, TCP, one HTTP exchange, a control.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewatch.collector.app import create_app
from gatewatch.collector.logging import AccessLogger
from gatewatch.collector.settings import Settings
from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import envelope
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now
from gatewatch.core.observations import (
    DNSAnswer,
    DNSQuery,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
)

BATCH = 100
BODY = "<html><head><title>Example</title></head><body>" + "content " * 200 + "</body></html>"


def page_load_keys() -> WebTestKeys:
    answer = DNSAnswer(answer_type="A", ipv4="127.80.0.5", ttl=300)
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="site.lab", query_type="A", t0=0.0,
                     t=0.01, rcode="NOERROR", answers=[answer])  # fmt: skip
    connect = TCPConnect(ip="127.80.0.5", port=80, t0=0.01, t=0.02, success=True)
    response = HTTPResponse(code=200, headers=[("Content-Type", "text/html")], body=BODY,
                            body_length=len(BODY), title="Example")  # fmt: skip
    request = HTTPRequest(url="http://site.lab/", headers=[("Host", "site.lab")])
    http = HTTPTransaction(t0=0.02, t=0.05, address="127.80.0.5:80", request=request, response=response)
    control = ControlObservations(
        dns=ControlDNS(addrs=["127.80.0.5"]),
        tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
        http_request=ControlHTTP(
            status_code=200, headers={"Content-Type": "text/html"}, title="Example", body_length=len(BODY)
        ),  # fmt: skip
    )
    return WebTestKeys(queries=[query], tcp_connect=[connect], requests=[http], control=control)


# The collector's control-signing secret here: each measurement carries its control vouched for, as an
# agent's does, so that ingest judges it (without a vouch it would store no verdict and skip the analysis).
CONTROL_SECRET = "bench-control-signing-secret-0123456789abcdef"


def signed_batches(count: int) -> list[list[dict[str, Any]]]:
    """One key per batch, as if each batch came from its own agent."""
    keys = page_load_keys()
    assert keys.control is not None
    vouch = ControlSigner(CONTROL_SECRET.encode()).sign("http://site.lab/", keys.control, utc_now())
    keys = keys.model_copy(update={"control_vouch": vouch})
    batches = []
    for start in range(0, count, BATCH):
        key = Ed25519PrivateKey.generate()
        batch = []
        for _ in range(min(BATCH, count - start)):
            now = utc_now()
            m = Measurement(
                measurement_start_time=now,
                test_start_time=now,
                test_runtime=0.05,
                input="http://site.lab/",
                probe_asn="AS64501",
                probe_cc="XL",
                test_keys=keys,
            )
            batch.append(envelope.sign(m.to_json_bytes(), key).model_dump())
        batches.append(batch)
    return batches


async def upload(batches: list[list[dict[str, Any]]], concurrency: int, db: Path) -> float:
    # Identified batches (no token): this figure is ingest itself; bench/batch_verify.py adds the tokens.
    settings = Settings(
        db=f"sqlite:///{db}",
        key_burst=1_000_000,
        key_rate=1_000.0,
        max_batch=BATCH,
        accept_identified=True,
        control_signing_secret=CONTROL_SECRET,
    )
    runner = web.AppRunner(create_app(settings), access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/api/v1/measurements"
    queue = list(reversed(batches))
    try:
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                while queue:
                    batch = queue.pop()
                    async with session.post(url, json={"measurements": batch}) as response:
                        results = (await response.json())["results"]
                    if response.status != 200 or {r["status"] for r in results} != {"accepted"}:
                        raise SystemExit(f"unexpected answer {response.status}: {results[:1]}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started
    finally:
        await runner.cleanup()


def verify_rates(batches: list[list[dict[str, Any]]]) -> tuple[float, float]:
    items = [item for batch in batches for item in batch]
    decoded = [
        (base64.b64decode(i["public_key"]), base64.b64decode(i["signature"]), base64.b64decode(i["payload"]))
        for i in items
    ]
    started = time.perf_counter()
    for public, signature, payload in decoded:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, payload)
    bare = len(decoded) / (time.perf_counter() - started)
    envelopes = [envelope.Envelope.model_validate(i) for i in items]
    started = time.perf_counter()
    for e in envelopes:
        envelope.verify(e)
    wrapped = len(envelopes) / (time.perf_counter() - started)
    return bare, wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="measurements to upload")
    parser.add_argument("--concurrency", type=int, default=1, help="uploads in flight at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    batches = signed_batches(args.count)
    payload_bytes = len(base64.b64decode(batches[0][0]["payload"]))
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as tmp:
        seconds = asyncio.run(upload(batches, args.concurrency, Path(tmp) / "bench.db"))
    ingest_rate = args.count / seconds
    bare, wrapped = verify_rates(batches)
    print(f"measurements: {args.count} in batches of {BATCH}, {payload_bytes} B each, concurrency "
          f"{args.concurrency}, SQLite (WAL, synchronous=FULL)")  # fmt: skip
    print(f"ingest through the app:   {ingest_rate:10.0f} measurements/s  ({seconds:.2f} s)")
    print(f"bare Ed25519 verify:      {bare:10.0f} verifications/s")
    print(f"envelope.verify:          {wrapped:10.0f} verifications/s")
    print(f"ingest / bare verify:     {ingest_rate / bare:10.3f}")


if __name__ == "__main__":
    main()

"""Ingest throughput through the real application, as a ratio to bare Ed25519 verification of the same
envelopes measured in the same run; and the stored bytes per measurement, as a ratio to the signed payload.

    python bench/ingest.py                             # 3,000 measurements, batches of 1, 10 and 100,
                                                       # identified and with a token, 3 repeats, both clients
    python bench/ingest.py --count 20000 --concurrency 4 --batches 100 --modes token --clients process \
        --more-concurrency "" --more-check-processes ""

The collector runs in this process behind a real TCP listener on 127.0.0.1 (routing, middlewares,
verification, validation, re-analysis against the vouched control, durable SQLite commit, metrics), and
a client uploads pre-signed measurements over loopback. Where that client runs (``--clients``):
``inline``, in the collector's own process and event loop, as this bench always did, which is a
measurement error (the load generator shares the collector's GIL and core, and its CPU is counted as the
collector's); ``process``, in a process of its own started before the clock, as wrk or ab would be (the
figures are the collector's alone). Both are printed, one line each, so that the old figure stays
comparable. ``identified``: each batch signed by an agent's long-term key; ``token``: each batch carries
a blind-signed token from the collector's issuer (checked and spent per batch, as issue 12's unlinkable
uploads do) and is signed by its ephemeral key. Right after each upload the same envelopes are verified
bare (one Ed25519 check each): ingest / bare is the figure (issue 16: >= 0.6 at batches of 100, >= 0.4
at 10). "by CPU": the same ratio from CPU time (this process's and the check workers', the inline
client's included, over the bare loop's), steadier than wall time when other work shares the cores, but
blind to what threads overlap and to waiting on the disk. Batches of 1 upload a fifth of the count.
Then more rows, each differing from those in one setting it names: ``--more-concurrency`` uploads in
flight at once (many volunteers: batches that arrive during a commit share the next one), and
``--more-check-processes`` (the checks in worker processes), batches of 10 and more, own-process client,
with a token only (the goal's scheme) unless only identified batches are asked for.
Bytes: what the SQLite file (WAL checkpointed) grew by over an empty store's, per measurement, over the
signed payload's size (goal <= 1.2). Medians and the spread (min-max) over the repeats. The
measurements look like a real page load: DNS, TCP, one HTTP exchange, a vouched control.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewatch.collector.app import create_app
from gatewatch.collector.ingest_processes import CHECK_POOL_KEY, process_count
from gatewatch.collector.issuer import ISSUER_KEY
from gatewatch.collector.logging import AccessLogger
from gatewatch.collector.settings import Settings
from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import blindrsa, envelope
from gatewatch.core.batch_token import PREFIX_BYTES, token_message
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
CLIENT_TIMEOUT = 600.0  # seconds the own-process client may take to start, or to upload a run
BODY = "<html><head><title>Example</title></head><body>" + "content " * 200 + "</body></html>"


def page_load_keys() -> WebTestKeys:
    # bogon as the agent computes it (127/8 is one): the collector re-derives the same value, copying nothing
    answer = DNSAnswer(answer_type="A", ipv4="127.80.0.5", ttl=300, bogon=True)
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


def signed_batches(count: int, size: int = BATCH) -> list[list[dict[str, Any]]]:
    """One key per batch, as if each batch came from its own agent."""
    return [items for _, items in keyed_batches(count, size)]


def keyed_batches(count: int, size: int = BATCH) -> list[tuple[Ed25519PrivateKey, list[dict[str, Any]]]]:
    """Batches of ``size`` signed envelopes, each with the key that signed it (its ephemeral key when the
    batch carries a token)."""
    keys = page_load_keys()
    assert keys.control is not None
    vouch = ControlSigner(CONTROL_SECRET.encode()).sign("http://site.lab/", keys.control, utc_now())
    keys = keys.model_copy(update={"control_vouch": vouch})
    batches = []
    for start in range(0, count, size):
        key = Ed25519PrivateKey.generate()
        batch = []
        for _ in range(min(size, count - start)):
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
        batches.append((key, batch))
    return batches


async def _tokens(app: web.Application, keys: list[Ed25519PrivateKey]) -> list[dict[str, Any]]:
    """A token per batch from the app's own issuer, as an agent would have fetched it (blinded, signed,
    unblinded: the issuance's cost is not part of the figure)."""
    issuer = app[ISSUER_KEY]
    epoch = issuer.current_epoch()
    signing = await issuer.signing_key(epoch)
    assert signing is not None and signing.private_key is not None
    public = signing.public_key
    tokens = []
    for key in keys:
        ephemeral = envelope.public_key_bytes(key)
        prepared = blindrsa.prepare(token_message(epoch, signing.key_id, ephemeral))
        blinded, inverse = blindrsa.blind(public, prepared)
        signature = blindrsa.finalize(
            public, prepared, blindrsa.blind_sign(signing.private_key, blinded), inverse
        )
        tokens.append({
            "epoch": epoch,
            "key_id": signing.key_id,
            "ephemeral_public_key": base64.b64encode(ephemeral).decode(),
            "token": base64.b64encode(prepared[:PREFIX_BYTES] + signature).decode(),
        })  # fmt: skip
    return tokens


def _processes_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far (Linux /proc)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return ticks / os.sysconf("SC_CLK_TCK")


async def _post_all(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int
) -> str | None:
    """Upload ``bodies`` with ``concurrency`` in flight; the first unexpected answer, or None."""
    queue = list(reversed(bodies))
    headers = {"Content-Type": "application/json"}
    errors: list[str] = []

    async def worker() -> None:
        while queue and not errors:
            async with session.post(url, data=queue.pop(), headers=headers) as response:
                answer = await response.read()
            results = json.loads(answer)["results"]
            if response.status != 200 or any(r["status"] != "accepted" for r in results):
                errors.append(f"unexpected answer {response.status}: {results[:1]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors[0] if errors else None


def _client_process(conn: Connection, url: str, bodies: list[bytes], concurrency: int) -> None:
    """The load generator in its own process: says it is ready, waits for the go, uploads, and sends back
    its wall seconds (or what went wrong)."""

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            conn.send("ready")
            if not conn.poll(CLIENT_TIMEOUT) or conn.recv() != "go":
                return
            started = time.perf_counter()
            error = await _post_all(session, url, bodies, concurrency)
            conn.send(error if error is not None else time.perf_counter() - started)

    asyncio.run(run())


async def _from_client(conn: Connection) -> Any:
    if not await asyncio.to_thread(conn.poll, CLIENT_TIMEOUT):
        raise SystemExit("the client process did not answer in time")
    return conn.recv()  # EOFError if it died


async def upload(
    batches: list[list[dict[str, Any]]],
    concurrency: int,
    db: Path,
    keys: list[Ed25519PrivateKey] | None = None,
    check_processes: int = 0,
    client: str = "inline",
) -> tuple[float, float]:
    """Seconds to ingest ``batches`` (wall, and CPU of this process and of the collector's check worker
    processes): identified (``keys`` None), else each with a token for its key. ``client``: "inline", the
    uploading client runs in this process (its CPU counted too), or "process", in a process of its own
    (started before the clock: its CPU is not counted)."""
    settings = Settings(
        check_processes=check_processes,
        db=f"sqlite:///{db}",
        key_burst=1_000_000,
        key_rate=1_000.0,
        max_batch=BATCH,
        accept_identified=keys is None,
        control_signing_secret=CONTROL_SECRET,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    tokens = await _tokens(app, keys) if keys is not None else [None] * len(batches)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/api/v1/measurements"
    # The bodies are encoded before the clock starts: the agents' JSON encoding is not the collector's work.
    bodies = [
        json.dumps({"measurements": batch} | ({"token": token} if token is not None else {})).encode()
        for batch, token in zip(batches, tokens, strict=True)
    ]
    pool = app.get(CHECK_POOL_KEY)
    pids = pool.worker_pids() if pool is not None else []
    process = None
    try:
        if client == "process":
            context = multiprocessing.get_context("spawn")
            conn, child_conn = context.Pipe()
            started = context.Process(target=_client_process, args=(child_conn, url, bodies, concurrency))
            started.start()
            process = started
            child_conn.close()  # the child's end is the child's alone: if it dies, recv sees the end
            if await _from_client(conn) != "ready":
                raise SystemExit("the client process did not start")
            cpu = time.process_time() + _processes_cpu(pids)
            conn.send("go")
            answer = await _from_client(conn)
            if isinstance(answer, str):
                raise SystemExit(answer)
            seconds = answer
        else:
            async with aiohttp.ClientSession() as session:
                started, cpu = time.perf_counter(), time.process_time() + _processes_cpu(pids)
                error = await _post_all(session, url, bodies, concurrency)
                if error is not None:
                    raise SystemExit(error)
                seconds = time.perf_counter() - started
        if pool is not None and sorted(pool.worker_pids()) != sorted(pids):
            raise SystemExit("a check worker process was replaced during the run: CPU not comparable")
        return seconds, time.process_time() + _processes_cpu(pids) - cpu
    finally:
        if process is not None:
            process.join(CLIENT_TIMEOUT)
            if process.is_alive():
                process.kill()
        await runner.cleanup()


def bare_verify_cpu(batches: list[list[dict[str, Any]]]) -> float:
    """CPU seconds per bare Ed25519 verification of these envelopes."""
    decoded = [
        (base64.b64decode(i["public_key"]), base64.b64decode(i["signature"]), base64.b64decode(i["payload"]))
        for batch in batches
        for i in batch
    ]
    started = time.process_time()
    for public, signature, payload in decoded:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, payload)
    return (time.process_time() - started) / len(decoded)


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


def stored_bytes(db: Path) -> int:
    """The SQLite file's size once its write-ahead log is folded in."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size


def _one_run(
    count: int, size: int, mode: str, concurrency: int, check_processes: int, client: str = "inline"
) -> tuple[float, float, float, float]:
    """Ingest rate, bare verify rate of the same envelopes (right after), bare verify CPU / ingest CPU per
    measurement, stored bytes / payload."""
    keyed = keyed_batches(count, size)
    batches = [items for _, items in keyed]
    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        keys = [key for key, _ in keyed] if mode == "token" else None
        empty = Path(tmp) / "empty.db"
        asyncio.run(upload([], concurrency, empty, [] if keys is not None else None, check_processes))
        seconds, cpu = asyncio.run(upload(batches, concurrency, db, keys, check_processes, client))
        payload_bytes = sum(len(base64.b64decode(i["payload"])) for b in batches for i in b)
        stored = stored_bytes(db) - stored_bytes(empty)  # the measurements' bytes, not the empty schema's
    bare, _ = verify_rates(batches)
    return count / seconds, bare, bare_verify_cpu(batches) / (cpu / count), stored / payload_bytes


CLIENTS = {
    "inline": "the uploading client in the collector's process (the figure as before: it shares the GIL and "
    "the core, and its CPU is counted)",
    "process": "the uploading client in its own process, as a load generator should be (by CPU: the "
    "collector's process and check workers only)",
}


def _show(values: list[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=3000, help="measurements per run (batches of 1: a fifth)"
    )
    parser.add_argument("--batches", default="1,10,100", help="batch sizes, comma-separated (at most 100)")
    parser.add_argument("--modes", default="identified,token", help="identified and/or token")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="uploads in flight at once")
    parser.add_argument(
        "--check-processes",
        type=int,
        default=0,
        help="the collector's check_processes setting (0: none, the default; -1: one per core)",
    )
    parser.add_argument(
        "--clients",
        default="inline,process",
        help="where the uploading client runs: inline (in the collector's process, as before), process "
        "(its own process), or both, comma-separated",
    )
    parser.add_argument(
        "--more-concurrency",
        default="4",
        help="after the rows above, rows with this many uploads in flight (comma-separated; empty: none), "
        "as many volunteers uploading at once: batches of 10 and more, own-process client, token",
    )
    parser.add_argument(
        "--more-check-processes",
        default="-1",
        help="after those, rows with this check_processes setting (comma-separated; empty: none): "
        "batches of 10 and more, own-process client, token, --concurrency uploads in flight",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(size) for size in args.batches.split(",")]
    modes = args.modes.split(",")
    clients = args.clients.split(",")
    if any(not 1 <= size <= BATCH for size in sizes) or set(modes) - {"identified", "token"}:
        raise SystemExit(f"batch sizes 1..{BATCH}; modes identified, token")
    if not clients or set(clients) - set(CLIENTS):
        raise SystemExit("clients: inline and/or process")
    more_concurrency = [int(n) for n in args.more_concurrency.split(",") if n.strip()]
    more_processes = [int(n) for n in args.more_check_processes.split(",") if n.strip()]

    payload_bytes = len(base64.b64decode(signed_batches(1)[0][0]["payload"]))
    print(f"measurements: {args.count} per run ({args.count // 5} in batches of 1), {payload_bytes} B "
          f"payload each, concurrency {args.concurrency}, check_processes {args.check_processes}, "
          f"SQLite (WAL, synchronous=FULL), {args.repeats} repeats")  # fmt: skip
    print("median (min-max) over the repeats; each ratio is to the bare verify rate of the same run")
    for client in clients:
        print(f"client {client}: {CLIENTS[client]}")
    for mode in modes:
        for size in sizes:
            for client in clients:
                _row(args, mode, size, client, args.concurrency, args.check_processes)
    larger = [size for size in sizes if size > 1]
    if larger and (more_concurrency or more_processes):
        print("more rows: the setting that differs from the rows above is named at the end of each")
    more_modes = ["token"] if "token" in modes else modes  # the goal's scheme: keeps the run short
    more = [(n, args.check_processes, f"concurrency {n}") for n in more_concurrency]
    more += [
        (args.concurrency, n, f"check_processes {n} ({process_count(n)} workers)") for n in more_processes
    ]
    for concurrency, processes, differs in more:
        for mode in more_modes:
            for size in larger:
                _row(args, mode, size, "process", concurrency, processes, differs)


def _row(  # fmt: skip
    args: argparse.Namespace,
    mode: str,
    size: int,
    client: str,
    concurrency: int,
    check_processes: int,
    differs: str = "",
) -> None:
    count = max(size, args.count // 5) if size == 1 else args.count
    rates, bares, ratios, cpu_ratios, stored = [], [], [], [], []
    for _ in range(args.repeats):
        rate, bare, cpu_ratio, bytes_ratio = _one_run(count, size, mode, concurrency, check_processes, client)
        cpu_ratios.append(cpu_ratio)
        rates.append(rate)
        bares.append(bare)
        ratios.append(rate / bare)
        stored.append(bytes_ratio)
    label = f"{mode:10s} batch {size:>3} client {client:7s}"
    print(f"{label}: ingest {_show(rates, 0)}/s, bare verify {_show(bares, 0)}/s, ingest / bare "
          f"verify {_show(ratios)}, by CPU {_show(cpu_ratios)}, stored bytes / payload "
          f"{_show(stored)}{', ' + differs if differs else ''}")  # fmt: skip


if __name__ == "__main__":
    main()

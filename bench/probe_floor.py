"""The floor under the agent's per-URL cost: a bare DNS+TCP+TLS+HTTP loop over the same URLs in the same lab.

    python bench/probe_floor.py [--latency-ms 20] [--concurrency 32] [--lists ../shared/data/test-lists]
                                [--limit N] [--repeat 3]

What the agent cannot do with less: per URL, the A and AAAA queries to the lab's resolver (dnspython's
message building and parsing, one UDP socket each), a TCP connection from ISP A's vantage to the first
address, a TLS handshake validating the lab's certificate (``ssl``, CA file) for https, one GET with h11
reading the body (up to the agent's 1 MiB cap), following redirects as the agent does (at most 5). No
models, no records, no analysis, no control, no signing, no logging: only the network work. The same
timeouts as the agent's defaults bound every step, so a blackholed site costs the floor the same wall time.

The lab is the one ``bench/agent_lab.py`` starts (``Lab(latency_ms=..., wildcard=True)`` in a child
process, certificates issued before the pass), so this process's CPU is the loop's alone. Prints the
loop's CPU and wall per URL (median of ``--repeat`` passes, with the spread) as JSON; asserts nothing.
``bench/agent_lab.py --repeat N`` runs this loop beside the agent in the same run and prints the ratio.
Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import h11

REPO = Path(__file__).resolve().parent.parent
ISP_SOURCE = "127.65.0.10"  # ISP A's vantage, as bench/agent_lab.py runs the agent
DNS_TIMEOUT, TCP_TIMEOUT, TLS_TIMEOUT, HTTP_TIMEOUT = 4.0, 5.0, 6.0, 10.0  # the agent's defaults
BODY_CAP = 1 << 20
MAX_REDIRECTS = 5
STARTUP_TIMEOUT = 60.0
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _resolver(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _addresses(host: str, resolver: tuple[str, int]) -> list[str]:
    async def ask(rdtype: dns.rdatatype.RdataType) -> list[str]:
        query = dns.message.make_query(host, rdtype)
        try:
            reply = await dns.asyncquery.udp(
                query, resolver[0], timeout=DNS_TIMEOUT, port=resolver[1], source=ISP_SOURCE
            )
        except (dns.exception.DNSException, OSError):
            return []
        return [item.address for rrset in reply.answer if rrset.rdtype == rdtype for item in rrset]

    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [host]
    except OSError:
        pass
    a, aaaa = await asyncio.gather(ask(dns.rdatatype.A), ask(dns.rdatatype.AAAA))
    return a + aaaa


async def _get(url: str, context: ssl.SSLContext, resolver: tuple[str, int], seen: list[int]) -> str | None:
    """One hop: DNS, TCP, TLS (https), GET; the redirect's absolute URL, or None when the chain ends.
    Each response's status code is appended to ``seen``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = [a for a in await _addresses(host, resolver) if ":" not in a]  # the lab is IPv4
    if not addresses:
        return None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addresses[0], port, local_addr=(ISP_SOURCE, 0)), TCP_TIMEOUT
        )
    except (OSError, TimeoutError):
        return None
    try:
        if https:
            await asyncio.wait_for(writer.start_tls(context, server_hostname=host), TLS_TIMEOUT)
        return await asyncio.wait_for(_exchange(url, parts, reader, writer, seen), HTTP_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError):
        return None
    finally:
        writer.close()


async def _exchange(url: str, parts: Any, reader: Any, writer: Any, seen: list[int]) -> str | None:
    conn = h11.Connection(h11.CLIENT)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [("Host", parts.netloc), ("User-Agent", USER_AGENT), ("Accept-Encoding", "identity")]
    writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
    writer.write(conn.send(h11.EndOfMessage()))
    location: str | None = None
    status, kept = 0, 0
    for _ in range(100_000):  # bounded like the agent's reads; each read returns data or ends the exchange
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            seen.append(status)
            location = next((v.decode() for k, v in event.headers if k == b"location"), None)
        elif isinstance(event, h11.Data):
            kept = min(BODY_CAP, kept + len(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    return urljoin(url, location) if 300 <= status < 400 and status != 304 and location else None


async def _measure(url: str, context: ssl.SSLContext, resolver: tuple[str, int], seen: list[int]) -> None:
    for _ in range(MAX_REDIRECTS + 1):
        following = await _get(url, context, resolver, seen)
        if following is None or urlsplit(following).scheme not in ("http", "https"):
            return
        url = following


async def _pass(urls: list[str], concurrency: int, ca_file: str, resolver: str) -> tuple[float, float, int]:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    where = _resolver(resolver)
    slots = asyncio.Semaphore(concurrency)
    seen: list[int] = []

    async def one(url: str) -> None:
        async with slots:
            await _measure(url, context, where, seen)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(url) for url in urls))
    return time.process_time() - cpu, time.perf_counter() - wall, len(seen)


def floor_pass(urls: list[str], concurrency: int, ca_file: str, resolver: str) -> dict[str, float]:
    """One pass of the bare loop over ``urls`` (lab URLs): CPU and wall seconds, per URL in ms, and how
    many HTTP responses came back (redirects included)."""
    cpu, wall, responses = asyncio.run(_pass(urls, concurrency, ca_file, resolver))
    n = max(1, len(urls))
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_ms_per_url": 1000 * cpu / n,
        "wall_ms_per_url": 1000 * wall / n,
        "responses": responses,
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of ``values`` (rounded for printing)."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def start_lab(latency_ms: float, urls: list[str], directory: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The lab agent_lab.py starts, in a child process: (process, pipe, stop event, what it sent)."""
    from agent_lab import serve_lab

    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    stop = context.Event()
    proc = context.Process(target=serve_lab, args=(child, stop, latency_ms, urls, directory), daemon=True)
    proc.start()
    if not parent.poll(STARTUP_TIMEOUT):
        proc.kill()
        raise RuntimeError("the lab did not start")
    return proc, parent, stop, parent.recv()


def stop_lab(proc: Any, parent: Any, stop: Any) -> float | None:
    """Stop the lab's process; the CPU seconds it spent serving (None if it did not say)."""
    stop.set()
    cpu = parent.recv()["cpu_s"] if parent.poll(15) else None
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)
    return cpu


def main(args: argparse.Namespace) -> int:
    import tempfile

    from agent_lab import LISTS, read_urls

    if not all((args.lists / name).is_file() for name in LISTS):
        print(f"skipped: the shared test lists are absent ({args.lists}); nothing measured")
        return 0
    urls = list(read_urls(args.lists))[: args.limit]
    with tempfile.TemporaryDirectory(prefix="gatewatch-probe-floor-") as tmp:
        proc, parent, stop, lab = start_lab(args.latency_ms, urls, tmp)
        try:
            lab_urls = [new for _, new in lab["urls"] if new is not None]
            passes = [
                floor_pass(lab_urls, args.concurrency, lab["ca_file"], lab["resolver"])
                for _ in range(args.repeat)
            ]
        finally:
            stop_lab(proc, parent, stop)
    figures = {
        "urls": len(lab_urls),
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "passes": args.repeat,
        "http_responses_per_pass": [p["responses"] for p in passes],
        "floor_cpu_ms_per_url": spread([p["cpu_ms_per_url"] for p in passes]),
        "floor_wall_ms_per_url": spread([p["wall_ms_per_url"] for p in passes]),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=Path, default=REPO.parent / "shared" / "data" / "test-lists")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N URLs (a quick try).")
    parser.add_argument("--repeat", type=int, default=3, help="Passes over the URLs (median and spread).")
    sys.exit(main(parser.parse_args()))

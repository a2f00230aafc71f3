"""A gzip bomb against the upload endpoint: the collector's CPU and /healthz's worst latency, before vs after.

    python bench/ingest_bomb.py                 # a 1 MB gzip of 1 GiB, 3 rounds per path
    python bench/ingest_bomb.py --mib 256 --rounds 1

Each path runs in its own child process on 127.0.0.1 (port chosen by the system), so that its CPU time is
its own (read from /proc before and after the bomb):

- ``before``: how uploads were read before issue 11: aiohttp's own decompression (``auto_decompress``, on
  the event loop), the body read in chunks up to the limit and refused with 413, aiohttp's default
  lingering (it keeps reading, and inflating, what the client still sends for up to 10 s);
- ``after``: the collector as ``gatewatch-collector serve`` runs it (``create_app`` + ``CollectorRunner``:
  the raw body inflated in bounded steps up to the limit, the rest read raw and dropped).

While the bomb is sent, the parent asks /healthz every 10 ms and keeps the slowest answer. Figures are
printed with the ratio before/after measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
import zlib
from asyncio.subprocess import PIPE

import aiohttp
from aiohttp import web

from gatewatch.core.vocabulary import BODY_TOO_LARGE

URL = "/api/v1/measurements"
LIMIT = 8 * 1024 * 1024  # the collector's default max_body_bytes


def gzip_bomb(mebibytes: int) -> bytes:
    """A single-member gzip of ``mebibytes`` MiB of zeros: one sync-flushed deflate block of 1 MiB of zeros
    repeated (its back-references only ever reach zeros), and the real CRC and size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    repeat = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + first
        + repeat * (mebibytes - 1)
        + compressor.flush()
        + trailer
    )


# --- the two servers (run in a child process) ------------------------------------------------------------


async def _old_upload(request: web.Request) -> web.Response:
    """The upload's body reading as it was: aiohttp inflates, the handler counts decoded bytes."""
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > LIMIT:
            return web.json_response({"error": BODY_TOO_LARGE, "detail": "limit"}, status=413)
    return web.json_response({"results": []})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _serve(path: str) -> None:
    if path == "before":
        app = web.Application()
        app.router.add_post(URL, _old_upload)
        app.router.add_get("/healthz", _healthz)
        runner: web.AppRunner = web.AppRunner(app, access_log=None)
    else:
        from gatewatch.collector.app import create_app
        from gatewatch.collector.http_server import CollectorRunner
        from gatewatch.collector.settings import Settings

        db = os.path.join(tempfile.mkdtemp(prefix="gw-bomb-"), "bench.db")
        runner = CollectorRunner(
            create_app(Settings(db=f"sqlite:///{db}", max_body_bytes=LIMIT)), access_log=None
        )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()  # until the parent kills this process


# --- the parent: bomb, /healthz, CPU ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _bomb_round(port: int, pid: int, bomb: bytes) -> tuple[float, float, int]:
    """(collector CPU seconds, worst /healthz seconds, status) for one bomb."""
    await asyncio.sleep(0.3)  # let the child settle
    cpu_before = _cpu_seconds(pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {URL} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n").encode()  # fmt: skip

    async def send() -> None:
        try:
            writer.write(head)
            for start in range(0, len(bomb), 64 * 1024):
                writer.write(bomb[start : start + 64 * 1024])
                await writer.drain()
        except ConnectionError:
            pass

    async def answer() -> int:
        status_line = await reader.readuntil(b"\r\n")
        await reader.readuntil(b"\r\n\r\n")  # the answer's head; its small body is not needed
        return int(status_line.split(b" ", 2)[1])

    sender = asyncio.create_task(send())
    answered = asyncio.create_task(answer())
    worst = 0.0
    deadline = time.monotonic() + 60
    last_cpu, last_sample = _cpu_seconds(pid), time.monotonic()
    async with aiohttp.ClientSession() as session:
        # Until the bomb is sent and answered and the collector is idle again (aiohttp may still be
        # inflating what it read after answering), or a minute at most.
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                await response.read()
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.01)
            if time.monotonic() - last_sample >= 0.3:
                cpu = _cpu_seconds(pid)
                if sender.done() and answered.done() and cpu - last_cpu < 0.02:
                    break
                last_cpu, last_sample = cpu, time.monotonic()
    status = await asyncio.wait_for(answered, 10)
    await sender
    writer.close()
    return _cpu_seconds(pid) - cpu_before, worst, status


async def _measure(path: str, bomb: bytes, rounds: int) -> list[tuple[float, float, int]]:
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", path, stdout=PIPE)
    try:
        assert child.stdout is not None
        port = int(await child.stdout.readline())
        return [await _bomb_round(port, child.pid, bomb) for _ in range(rounds)]
    finally:
        child.kill()
        await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="decoded size of the bomb, MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["before", "after"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    bomb = gzip_bomb(args.mib)
    print(f"bomb: {len(bomb) / 1e6:.2f} MB of gzip, {args.mib} MiB decoded; body limit {LIMIT >> 20} MiB")
    results = {path: asyncio.run(_measure(path, bomb, args.rounds)) for path in ("before", "after")}
    medians = {}
    for path, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds)
        worst = max(r[1] for r in rounds)
        medians[path] = (cpu, worst)
        statuses = sorted({r[2] for r in rounds})
        print(f"{path:>6}: collector CPU {cpu:.3f} s (median of {len(rounds)}),"
              f" /healthz worst {worst * 1000:.1f} ms, status {statuses}")  # fmt: skip
    (cpu_b, worst_b), (cpu_a, worst_a) = medians["before"], medians["after"]
    cpu_ratio, worst_ratio = cpu_b / max(cpu_a, 1e-3), worst_b / max(worst_a, 1e-4)
    print(f"ratio before/after: CPU {cpu_ratio:.1f}x, /healthz worst {worst_ratio:.1f}x")


if __name__ == "__main__":
    main()

"""What a proxy costs the agent's uploads: the time of one upload-sized POST through the agent's HTTP client,
directly, through SOCKS5h, through HTTP CONNECT, and in Tor mode (fresh credentials, hence a fresh
connection and handshake, per upload), all on loopback.

    python bench/upload_transports.py [REQUESTS] [BODY_KIB]

The far end is a small aiohttp server that reads the body and answers ``{}``; the proxies are the test
suite's own (tests/agent/proxies.py: asyncio relays, so their cost is Python's, not Tor's network). Prints
the median and p90 milliseconds per request and each path's median as a ratio to the direct one, measured
in the same run; asserts nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiohttp import web

from gatewatch.agent.http_client import HttpClient
from gatewatch.agent.proxy import Route, parse_proxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "agent"))
from proxies import ConnectProxy, Socks5Server  # the test suite's loopback proxies

NAME = "collector.bench"


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})


async def _once(client: HttpClient, url: str, body: bytes, isolate: bool) -> float:
    group = client.new_stream_group() if isolate else None
    started = time.perf_counter()
    await client.request("POST", url, body=body, content_type="application/json", stream_group=group)
    return (time.perf_counter() - started) * 1000


async def main(requests: int, body_kib: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v1/measurements", _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    body = b"x" * (body_kib * 1024)
    names = {NAME: "127.0.0.1"}
    async with (
        Socks5Server(names=names) as socks,
        Socks5Server(names=names, accept_any_credentials=True) as tor,
    ):
        async with ConnectProxy(names=names) as connect:
            paths = {
                "direct": (Route(), f"http://127.0.0.1:{port}/api/v1/measurements", False),
                "socks5h": (
                    Route(parse_proxy(f"socks5h://127.0.0.1:{socks.port}")),
                    f"http://{NAME}:{port}/api/v1/measurements",
                    False,
                ),
                "http-connect": (
                    Route(parse_proxy(f"http://127.0.0.1:{connect.port}")),
                    f"http://{NAME}:{port}/api/v1/measurements",
                    False,
                ),
                "tor-isolated": (
                    Route(parse_proxy(f"socks5h://127.0.0.1:{tor.port}"), isolate=True),
                    f"http://{NAME}:{port}/api/v1/measurements",
                    True,
                ),
            }
            clients = {name: HttpClient(route=route) for name, (route, _, _) in paths.items()}
            times: dict[str, list[float]] = {name: [] for name in paths}
            for index in range(requests + 3):  # bounded; the paths take turns, so drift hits all alike
                for name, (_, url, isolate) in paths.items():
                    elapsed = await _once(clients[name], url, body, isolate)
                    if index >= 3:  # the first three are warm-up
                        times[name].append(elapsed)
            for client in clients.values():
                await client.close()
    print(f"{requests} POSTs of {body_kib} KiB each, per path (ms per request), paths interleaved")
    direct = statistics.median(times["direct"])
    for name, values in times.items():
        values.sort()
        median, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
        print(f"  {name:13s} median {median:7.2f}  p90 {p90:7.2f}  ratio to direct {median / direct:5.2f}")
    await runner.cleanup()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    kib = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    asyncio.run(main(count, kib))

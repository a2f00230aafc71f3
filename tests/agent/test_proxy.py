"""The agent's HTTP client through the test suite's own SOCKS5 and HTTP CONNECT proxies, on loopback:
what each proxy saw (the name or the address, the credentials), TLS through a tunnel, fronting, refusals."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gatewatch.agent.http_client import ConnectFailed, HttpClient, InvalidRequest, Timeouts
from gatewatch.agent.proxy import ProxyError, Route, parse_proxy, socks5_address
from gatewatch.lab.certs import issue_lab_pki

from .proxies import ConnectProxy, Socks5Server
from .test_http_client import answer_each, response, serving

QUICK = Timeouts(connect=2.0, read=2.0, total=5.0)
COLLECTOR_NAME = "collector.test"  # known to the test proxies only: no resolver knows it


def socks(proxy: Socks5Server, scheme: str = "socks5h", auth: str = "") -> Route:
    return Route(proxy=parse_proxy(f"{scheme}://{auth}127.0.0.1:{proxy.port}"))


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "user", "password"),
    [
        ("socks5h://127.0.0.1:9050", "socks5h", "127.0.0.1", 9050, None, None),
        ("socks5://u%40x:p%3Aw@[::1]:1080", "socks5", "::1", 1080, "u@x", "p:w"),
        ("http://proxy.example:3128", "http", "proxy.example", 3128, None, None),
    ],
)
def test_proxy_urls_parse(url: str, scheme: str, host: str, port: int, user: str, password: str) -> None:
    spec = parse_proxy(url)
    assert (spec.scheme, spec.host, spec.port, spec.username, spec.password) == (
        scheme,
        host,
        port,
        user,
        password,
    )
    assert "@" not in spec.public_url() and "p:w" not in repr(spec)


@pytest.mark.parametrize(
    "url", ["socks4://127.0.0.1:1080", "socks5h://127.0.0.1", "https://127.0.0.1:3128", "socks5h://:9050"]
)
def test_unusable_proxy_urls_are_refused_with_a_sentence(url: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        parse_proxy(url)


def test_socks5_addresses_are_typed() -> None:
    assert socks5_address("127.0.0.1") == b"\x01\x7f\x00\x00\x01"
    assert socks5_address("::1")[0] == 4 and len(socks5_address("::1")) == 17
    assert socks5_address("collector.test") == b"\x03\x0ecollector.test"
    with pytest.raises(ProxyError):
        socks5_address("a" * 300)


async def test_socks5h_sends_the_name_to_the_proxy_and_resolves_nothing(monkeypatch) -> None:
    def no_resolving(*args: object, **kwargs: object) -> None:
        raise AssertionError("the agent resolved a name itself")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolving)
    async with serving(answer_each(response(b'{"ok": 1}'))) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        async with Socks5Server(names={COLLECTOR_NAME: "127.0.0.1"}) as proxy:
            async with HttpClient(timeouts=QUICK, route=socks(proxy)) as client:
                answer = await client.get(f"http://{COLLECTOR_NAME}:{port}/api/v1/geolocate")
    assert answer.json() == {"ok": 1}
    assert [(s.host, s.port, s.address_type) for s in proxy.seen] == [(COLLECTOR_NAME, port, "name")]
    assert srv.heads[0]["host"] == f"{COLLECTOR_NAME}:{port}"


async def test_socks5_resolves_locally_and_sends_the_address() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        async with Socks5Server() as proxy:
            async with HttpClient(timeouts=QUICK, route=socks(proxy, "socks5")) as client:
                await client.get(f"http://localhost:{port}/")
    assert proxy.seen[0].address_type in ("ipv4", "ipv6") and proxy.seen[0].host in ("127.0.0.1", "::1")


async def test_socks5_username_and_password() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        async with Socks5Server(credentials=("vol", "s3cret")) as proxy:
            async with HttpClient(timeouts=QUICK, route=socks(proxy, auth="vol:s3cret@")) as client:
                assert (await client.get(srv.url)).status == 200
            async with HttpClient(timeouts=QUICK, route=socks(proxy, auth="vol:wrong@")) as client:
                with pytest.raises(ConnectFailed) as caught:
                    await client.get(srv.url)
            async with HttpClient(timeouts=QUICK, route=socks(proxy)) as client:  # no credentials
                with pytest.raises(ConnectFailed) as unauthenticated:
                    await client.get(srv.url)
    assert caught.value.failure == "proxy_auth_failed"
    assert unauthenticated.value.failure == "proxy_auth_failed"
    assert len(srv.heads) == 1


async def test_a_socks_refusal_is_named() -> None:
    async with Socks5Server() as proxy:  # it never connects off loopback: "not allowed"
        async with HttpClient(timeouts=QUICK, route=socks(proxy)) as client:
            with pytest.raises(ConnectFailed) as caught:
                await client.get("http://unknown.test/")
    assert caught.value.failure == "proxy_refused: not_allowed"


async def test_a_proxy_that_is_down_is_a_connect_failure() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with HttpClient(timeouts=QUICK, route=Route(parse_proxy(f"socks5h://127.0.0.1:{port}"))) as client:
        with pytest.raises(ConnectFailed) as caught:
            await client.get("http://collector.test/")
    assert caught.value.failure == "connection_refused"


async def test_a_proxy_speaking_something_else_is_a_bad_answer() -> None:
    async def talk_http_at_once(received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    async with serving(talk_http_at_once) as not_a_proxy:
        port = int(not_a_proxy.url.rsplit(":", 1)[1])
        route = Route(parse_proxy(f"socks5h://127.0.0.1:{port}"))
        async with HttpClient(timeouts=QUICK, route=route) as client:
            with pytest.raises(ConnectFailed) as caught:
                await client.get("http://collector.test/")
    assert caught.value.failure == "proxy_bad_answer"


async def test_http_connect_with_basic_auth() -> None:
    async with serving(answer_each(response(b'{"via": "connect"}'))) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        async with ConnectProxy(names={COLLECTOR_NAME: "127.0.0.1"}, credentials=("a", "b")) as proxy:
            route = Route(parse_proxy(f"http://a:b@127.0.0.1:{proxy.port}"))
            async with HttpClient(timeouts=QUICK, route=route) as client:
                assert (await client.get(f"http://{COLLECTOR_NAME}:{port}/")).json() == {"via": "connect"}
            async with HttpClient(
                timeouts=QUICK, route=Route(parse_proxy(f"http://127.0.0.1:{proxy.port}"))
            ) as client:
                with pytest.raises(ConnectFailed) as caught:
                    await client.get(f"http://{COLLECTOR_NAME}:{port}/")
    assert proxy.seen[0].host == COLLECTOR_NAME and (proxy.seen[0].username, proxy.seen[0].password) == (
        "a",
        "b",
    )
    assert caught.value.failure == "proxy_auth_failed"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    names = ["127.0.0.1", COLLECTOR_NAME, "front.test"]
    return issue_lab_pki(names, Path(tmp_path_factory.mktemp("pki")))


@pytest.mark.parametrize("proxy_kind", [Socks5Server, ConnectProxy])
async def test_https_through_a_tunnel_checks_the_collectors_name(pki, proxy_kind) -> None:
    tls = pki.server_context(COLLECTOR_NAME)
    async with serving(answer_each(response(b'{"tls": 1}')), tls=tls, scheme="https") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        async with proxy_kind(names={COLLECTOR_NAME: "127.0.0.1"}) as proxy:
            scheme = "socks5h" if proxy_kind is Socks5Server else "http"
            route = Route(parse_proxy(f"{scheme}://127.0.0.1:{proxy.port}"))
            async with HttpClient(timeouts=QUICK, ca_file=pki.ca_file, route=route) as client:
                assert (await client.get(f"https://{COLLECTOR_NAME}:{port}/")).json() == {"tls": 1}


async def test_a_fronted_address_names_the_front_in_tls_and_the_collector_in_host(pki) -> None:
    tls = pki.server_context("front.test")
    seen_sni: list[str | None] = []
    tls.sni_callback = lambda sock, name, context: seen_sni.append(name)  # type: ignore[assignment]
    async with serving(answer_each(response(b"{}")), tls=tls, scheme="https") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        async with Socks5Server(names={"front.test": "127.0.0.1"}) as proxy:
            # Through a proxy, so that "front.test" needs no resolver either.
            route = Route(parse_proxy(f"socks5h://127.0.0.1:{proxy.port}"), front="front.test")
            async with HttpClient(timeouts=QUICK, ca_file=pki.ca_file, route=route) as client:
                await client.get(f"https://collector.example.org:{port}/api/v1/geolocate")
    assert seen_sni == ["front.test"]
    assert proxy.seen[0].host == "front.test"
    assert srv.heads[0]["host"] == f"collector.example.org:{port}"


async def test_an_onion_address_is_refused_without_socks5h() -> None:
    onion = "http://" + "a" * 56 + ".onion/"
    for route in (
        Route(),
        Route(parse_proxy("socks5://127.0.0.1:9")),
        Route(parse_proxy("http://127.0.0.1:9")),
    ):
        async with HttpClient(timeouts=QUICK, route=route) as client:
            with pytest.raises(InvalidRequest) as caught:
                await client.get(onion)
        assert caught.value.failure == "onion_needs_tor"


async def test_stream_groups_get_their_own_connections_and_tor_credentials() -> None:
    async with serving(answer_each(response(b"{}"))) as srv:
        async with Socks5Server(accept_any_credentials=True) as proxy:
            route = Route(parse_proxy(f"socks5h://127.0.0.1:{proxy.port}"), isolate=True)
            async with HttpClient(timeouts=QUICK, route=route) as client:
                await client.get(srv.url)
                await client.get(srv.url)  # the client's own group: the same connection
                for _ in range(3):
                    await client.request("GET", srv.url, stream_group=client.new_stream_group())
    credentials = [(s.username, s.password) for s in proxy.seen]
    assert len(credentials) == 4 == len(set(credentials)) == proxy.connections
    assert len(srv.heads) == 5

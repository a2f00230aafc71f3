"""``POST /api/v1/control`` through the real app, against the emulated censored network.

The collector's probes bind no source address, so the kernel gives them 127.0.0.1: the lab's clean
vantage. With ``--control-allow-net 127.0.0.0/8`` the control must show the uncensored view; without it
every loopback destination (from the URL, the DNS answers, the agent's ``addrs`` or a redirect) is refused.
All traffic stays in 127.0.0.0/8; listeners the tests own prove that nothing connected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gatewatch.analysis import analyse, load_default_fingerprints, summarise
from gatewatch.collector.app import create_app
from gatewatch.collector.control import ControlService, ControlSettings
from gatewatch.collector.settings import Settings
from gatewatch.core.control import ControlObservations
from gatewatch.core.wire import ControlRequest
from gatewatch.lab import Lab
from gatewatch.lab.pages import blockpage, clean_page
from gatewatch.probes.web import measure

PATH = "/api/v1/control"
LAB_ALLOWED = ("127.0.0.0/8",)
# The collector never binds a source, so its probes come from 127.0.0.1 (the clean vantage).
assert Lab().networks["clean"].source_address == "127.0.0.1"


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with await Lab.start() as started:
        yield started


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    """A loopback listener nobody should reach; ``accepted(sock)`` says whether anything connected."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


def accepted(sock: socket.socket) -> bool:
    # The kernel completes handshakes into the backlog whether or not we accept: one is there if any came.
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def settings_for(tmp_path: Path, lab: Lab | None = None, **changes: Any) -> Settings:
    fields: dict[str, Any] = {"db": f"sqlite:///{tmp_path / 'c.db'}"}
    if lab is not None:
        fields |= {"control_resolver": lab.resolver, "ca_file": lab.ca_file}
    return Settings(**(fields | changes))


async def control(client: Any, body: Any, *, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    response = await client.post(PATH, data=data, headers={"Content-Type": "application/json"})
    return response.status, await response.json()


@pytest.mark.lab
async def test_the_control_shows_the_uncensored_view(aiohttp_client, lab: Lab, tmp_path: Path) -> None:
    asn_csv, cc_csv = tmp_path / "asn.csv", tmp_path / "cc.csv"
    lab.write_asn_csv(asn_csv)
    lab.write_country_csv(cc_csv)
    settings = settings_for(
        tmp_path, lab, control_allow_net=LAB_ALLOWED, asn_db=(asn_csv,), country_db=(cc_csv,)
    )
    client = await aiohttp_client(create_app(settings))
    urls = lab.urls()
    answers = await asyncio.gather(*(control(client, {"input": url}) for url in urls))
    controls: dict[str, ControlObservations] = {}
    for url, (status, body) in zip(urls, answers, strict=True):
        assert status == 200, (url, body)
        controls[url] = ControlObservations.model_validate(body)

    clean = controls[lab.url("clean.lab")]
    server = lab.server_address("clean.lab")
    assert clean.dns.failure is None and clean.dns.addrs == [server]
    assert clean.dns.asns == {server: 64600}  # from the app's GeoDB (the lab's hosting range)
    assert clean.http_request.status_code == 200 and clean.http_request.title
    assert all(tcp.status for tcp in clean.tcp_connect.values())
    sni = controls[lab.url("sni-reset.lab")]  # reset only inside the censored networks
    assert sni.tls_handshake and all(tls.status and tls.failure is None for tls in sni.tls_handshake.values())
    assert sni.http_request.status_code == 200
    nxdomain = controls[lab.url("nxdomain.lab")]  # only the national resolver lies about it
    assert nxdomain.dns.failure is None and nxdomain.dns.addrs == [lab.server_address("nxdomain.lab")]
    blockpage = controls[lab.url("blockpage.lab")]
    assert blockpage.http_request.status_code == 200
    assert blockpage.http_request.body_sha256 == clean_page_digest(controls, lab, "blockpage.lab")
    assert controls[lab.url("nonexistent.lab")].dns.failure == "dns_nxdomain_error"

    # What the endpoint answers is what the clean vantage sees, and it makes the analysis find each
    # censored domain's expected verdict from inside a censored network.
    fingerprints = load_default_fingerprints()

    async def check(url: str) -> None:
        direct = summarise(await measure(url, lab.control_config()))
        got = controls[url]
        assert (got.dns.failure, got.dns.addrs) == (direct.dns.failure, direct.dns.addrs), url
        assert got.tcp_connect == direct.tcp_connect, url
        assert got.tls_handshake == direct.tls_handshake, url
        assert got.http_request.status_code == direct.http_request.status_code, url
        assert got.http_request.title == direct.http_request.title, url
        keys = await measure(url, lab.web_config("isp-a"))
        assert analyse(url, keys, got, fingerprints).blocking == lab.expected(url, "isp-a"), url

    await asyncio.gather(*(check(url) for url in urls))


def clean_page_digest(controls: dict[str, ControlObservations], lab: Lab, domain: str) -> str | None:
    """The body digest the control saw for ``domain``: it must be the real page, not the blockpage,
    so it differs from what the censored network is served (checked against the lab's own page)."""
    digest = controls[lab.url(domain)].http_request.body_sha256
    assert digest != hashlib.sha256(blockpage(domain).encode()).hexdigest()
    assert digest == hashlib.sha256(clean_page(domain).encode()).hexdigest()
    return digest


@pytest.mark.lab
async def test_loopback_destinations_are_refused_without_allow_net(
    aiohttp_client, lab: Lab, tmp_path: Path, listener: tuple[socket.socket, int]
) -> None:
    sock, port = listener
    client = await aiohttp_client(create_app(settings_for(tmp_path, lab)))

    # The URL names our listener directly (v4, v4-mapped v6 and a decimal spelling of 127.0.0.1).
    for url in (
        f"http://127.0.0.1:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://2130706433:{port}/",
    ):
        status, body = await control(client, {"input": url})
        assert status in (200, 400), (url, body)
        if status == 200:
            answer = ControlObservations.model_validate(body)
            assert answer.tcp_connect == {} and answer.http_request.status_code is None, url
    # A name the (lab) resolver points at loopback, plus the agent's loopback address for our listener.
    url = f"http://clean.lab:{port}/"
    status, body = await control(client, {"input": url, "addrs": ["127.0.0.1", "::1", "0.0.0.0"]})
    assert status == 200, body
    answer = ControlObservations.model_validate(body)
    assert answer.dns.addrs == [lab.server_address("clean.lab")]  # recorded ...
    assert answer.tcp_connect == {}  # ... never visited
    assert answer.http_request.failure == "dns_bogon_error"
    # The lab's own server on its real port is refused as well: loopback is not public.
    status, body = await control(client, {"input": lab.url("clean.lab")})
    assert status == 200 and ControlObservations.model_validate(body).tcp_connect == {}
    assert not accepted(sock)


async def test_a_redirect_into_loopback_is_not_followed(
    aiohttp_client, tmp_path: Path, listener: tuple[socket.socket, int]
) -> None:
    sock, port = listener

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{port}/admin")

    # An "allowed" site in its own range (standing in for a public one) that redirects into loopback.
    site_app = web.Application()
    site_app.router.add_get("/", redirect)
    runner = web.AppRunner(site_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.81.0.1", 0)
    await site.start()
    try:
        site_port = runner.addresses[0][1]
        # A resolver address nobody listens on: an IP-literal URL needs no DNS, so none is ever asked.
        settings = settings_for(
            tmp_path, control_allow_net=("127.81.0.0/16",), control_resolver="127.81.0.2:9"
        )
        client = await aiohttp_client(create_app(settings))
        status, body = await control(client, {"input": f"http://127.81.0.1:{site_port}/"})
    finally:
        await runner.cleanup()
    assert status == 200, body
    answer = ControlObservations.model_validate(body)
    assert f"127.81.0.1:{site_port}" in answer.tcp_connect  # the allowed site was measured
    assert f"127.0.0.1:{port}" not in answer.tcp_connect
    assert answer.http_request.failure == "dns_bogon_error"  # the hop into loopback had nowhere to go
    assert not accepted(sock)


def test_private_addrs_from_the_agent_are_ignored() -> None:
    service = ControlService(ControlSettings(allow_nets=("127.80.0.0/16",)))
    addrs = [
        "10.10.34.35",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "224.0.0.1",
        "0.0.0.0",
        "::ffff:10.0.0.1",
        "not an address",
        "127.80.0.10",  # inside the allowed range
        "93.184.215.14",  # public
    ]
    assert service.usable_addrs(addrs) == ("127.80.0.10", "93.184.215.14")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[]", "invalid_request"),
        (b"{}", "invalid_request"),
        (b'{"input": 5}', "invalid_request"),
        (b'{"input": "http://a.lab/", "extra": 1}', "invalid_request"),
        (b'{"input": "http://a.lab/", "addrs": "1.2.3.4"}', "invalid_request"),
        (json.dumps({"input": "http://a.lab/", "addrs": ["1.1.1.1"] * 17}).encode(), "invalid_request"),
        (b'{"input": "ftp://a.lab/"}', "invalid_input"),
        (b'{"input": "http:///"}', "invalid_input"),
        (b'{"input": "http://[::1/"}', "invalid_input"),
        (b'{"input": "http://a.lab:99999/"}', "invalid_input"),
        (b'{"input": "http://bad_host!.lab/"}', "invalid_input"),
        (json.dumps({"input": "http://a.lab/" + "x" * 3000}).encode(), "invalid_input"),
    ],
)
async def test_malformed_bodies_are_400_with_a_reason(
    aiohttp_client, tmp_path: Path, raw: bytes, error: str
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, control_resolver="127.81.0.2:9")))
    status, body = await control(client, None, raw=raw)
    assert status == 400, body
    assert body["error"] == error and body["detail"]


async def test_oversized_bodies_are_413(aiohttp_client, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    big = json.dumps({"input": "http://a.lab/", "addrs": ["x" * 20_000]}).encode()
    status, body = await control(client, None, raw=big)
    assert status == 413 and body["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while reading
        for _ in range(10):
            yield b" " * 4096

    response = await client.post(PATH, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413


async def test_rate_limit_is_global_and_cache_hits_are_free(
    aiohttp_client, tmp_path: Path, listener: tuple[socket.socket, int]
) -> None:
    sock, port = listener
    # Loopback URLs without allow-net: each control runs (and is refused) without sending a packet.
    settings = settings_for(tmp_path, control_rate=0.01, control_burst=2, control_resolver="127.81.0.2:9")
    client = await aiohttp_client(create_app(settings))
    first = {"input": f"http://127.0.0.1:{port}/a"}
    assert (await control(client, first))[0] == 200
    assert (await control(client, {"input": f"http://127.0.0.1:{port}/b"}))[0] == 200
    for _ in range(3):
        assert (await control(client, first))[0] == 200  # answered from the cache
    response = await client.post(PATH, json={"input": f"http://127.0.0.1:{port}/c"})
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"] == "rate_limited"
    assert not accepted(sock)


async def test_identical_requests_share_one_measurement() -> None:
    service = ControlService(ControlSettings(resolver="127.81.0.2:9", rate=0.01, burst=1))
    request = ControlRequest(input="http://127.0.0.1:9/", addrs=["127.0.0.1"])
    answers = await asyncio.gather(*(service.observe(request) for _ in range(5)))
    assert all(a == answers[0] for a in answers)  # one token bought all five


BATCH_PATH = "/api/v1/controls"


@pytest.mark.lab
async def test_a_batch_answers_each_request_in_order_as_the_single_endpoint_would(
    aiohttp_client, lab: Lab, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, lab, control_allow_net=LAB_ALLOWED)))
    urls = [
        lab.url("clean.lab"),
        "ftp://not-a-web.url/",
        lab.url("nonexistent.lab"),
        lab.url("blockpage.lab"),
    ]
    response = await client.post(BATCH_PATH, json={"requests": [{"input": url} for url in urls]})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [item["input"] for item in results] == urls
    assert results[1]["control"] is None and results[1]["error"] == "invalid_input" and results[1]["detail"]
    for index in (0, 2, 3):
        item = results[index]
        assert item["error"] is None
        single_status, single = await control(client, {"input": urls[index]})  # now from the cache
        assert single_status == 200 and ControlObservations.model_validate(
            single
        ) == ControlObservations.model_validate(item["control"])
    assert results[2]["control"]["dns"]["failure"] == "dns_nxdomain_error"


async def test_a_batch_item_over_the_budget_is_rate_limited_alone(
    aiohttp_client, tmp_path: Path, listener: tuple[socket.socket, int]
) -> None:
    sock, port = listener
    # Loopback URLs without allow-net: each control runs (and is refused) without sending a packet.
    settings = settings_for(tmp_path, control_rate=0.01, control_burst=2, control_resolver="127.81.0.2:9")
    client = await aiohttp_client(create_app(settings))
    requests = [{"input": f"http://127.0.0.1:{port}/{name}"} for name in ("a", "b", "c")]
    response = await client.post(BATCH_PATH, json={"requests": requests})
    assert response.status == 200
    results = (await response.json())["results"]
    assert sum(item["control"] is not None for item in results) == 2
    limited = [item for item in results if item["error"] == "rate_limited"]
    assert len(limited) == 1 and limited[0]["retry_after"] >= 1 and limited[0]["control"] is None
    assert not accepted(sock)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"not json", 400, "invalid_json"),
        (json.dumps({"requests": []}).encode(), 400, "invalid_request"),
        (json.dumps({"requests": [{"input": "http://a.lab/"}] * 33}).encode(), 400, "invalid_request"),
        (
            json.dumps({"requests": [{"input": "http://a.lab/", "ip": "1.2.3.4"}]}).encode(),
            400,
            "invalid_request",
        ),
        (
            json.dumps({"requests": [{"input": "http://a.lab/" + "x" * 9000}] * 32}).encode(),
            413,
            "body_too_large",
        ),
    ],
    ids=["not-json", "empty", "33-requests", "unknown-field", "too-large"],
)
async def test_a_malformed_batch_is_refused_whole_with_a_reason(
    aiohttp_client, tmp_path: Path, body: bytes, status: int, error: str
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, control_resolver="127.81.0.2:9")))
    response = await client.post(BATCH_PATH, data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    answer = await response.json()
    assert answer["error"] == error and answer["detail"]

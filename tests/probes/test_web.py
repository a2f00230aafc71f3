"""The web measurement end to end on loopback: fake resolver, plain and TLS servers, redirects, safety."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

import pytest

from gatewatch.core import failures
from gatewatch.probes import web
from gatewatch.probes.config import DNSConfig, HTTPConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.trace import Trace

from .conftest import FORGED_ADDRESS, LOOPBACK, PKI, FakeResolver, LoopbackHTTPServer

LAB = ("127.0.0.0/8",)  # the lab's "internet" is loopback: declared routable so it is not a bogon


def lab_config(
    resolver: FakeResolver,
    pki: PKI | None = None,
    *,
    routable: tuple[str, ...] = LAB,
    max_addresses: int = 4,
    **http: Any,
) -> WebConfig:
    return WebConfig(
        dns=DNSConfig(resolver=resolver.address, timeout=1.0, linger=0.02, routable=routable),
        tcp=TCPConfig(timeout=1.0, max_addresses=max_addresses),
        tls=TLSConfig(timeout=2.0, ca_file=str(pki.ca_file) if pki else None),
        http=HTTPConfig(**{"timeout": 2.0, **http}),
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def fds_settle_to(expected: int) -> int:
    """The open fd count once the in-process servers have noticed the probe hang up (at most ~1 s)."""
    for _ in range(50):
        if open_fds() == expected:
            break
        await asyncio.sleep(0.02)
    return open_fds()


async def test_plain_page(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    trace = Trace()
    keys = await web.measure(f"http://site.test:{http_server.port}/", lab_config(resolver), trace=trace)
    assert [(q.query_type, q.failure) for q in keys.queries] == [
        ("A", None),
        ("AAAA", failures.DNS_NO_ANSWER),
    ]
    assert [(c.ip, c.port, c.failure) for c in keys.tcp_connect] == [(LOOPBACK, http_server.port, None)]
    assert keys.tls_handshakes == []
    [tx] = keys.requests
    assert tx.failure is None and tx.transport == "tcp" and tx.address == f"{LOOPBACK}:{http_server.port}"
    assert tx.response is not None and tx.response.title == "Café & Friends"
    assert dict(http_server.requests[0][1])["Host"] == f"site.test:{http_server.port}"
    # One clock for every step, in order.
    # Connecting starts once the first reply is in; the query goes on listening for late replies meanwhile.
    first_reply = keys.queries[0].replies[0].t
    assert first_reply <= keys.tcp_connect[0].t0 <= keys.tcp_connect[0].t <= tx.t0 <= tx.t
    assert keys.tcp_connect[0].t0 < keys.queries[0].t  # the linger overlapped the connection
    assert (keys.control, keys.verdict) == (None, None)


async def test_https_page(resolver: FakeResolver, https_server: LoopbackHTTPServer, pki: PKI) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"https://site.test:{https_server.port}/", lab_config(resolver, pki))
    [handshake] = keys.tls_handshakes
    assert handshake.validated and handshake.server_name == "site.test" and handshake.failure is None
    [tx] = keys.requests
    assert tx.failure is None and tx.transport == "tls"
    assert tx.response is not None and tx.response.code == 200


@pytest.mark.parametrize(
    ("host", "use_ca", "failure"),
    [
        ("wrong.test", True, failures.SSL_INVALID_HOSTNAME),
        ("site.test", False, failures.SSL_UNKNOWN_AUTHORITY),
    ],
)
async def test_no_request_over_an_unvalidated_connection(
    resolver: FakeResolver, https_server: LoopbackHTTPServer, pki: PKI, host: str, use_ca: bool, failure: str
) -> None:
    resolver.zone[host] = [LOOPBACK]
    before = open_fds()
    keys = await web.measure(
        f"https://{host}:{https_server.port}/", lab_config(resolver, pki if use_ca else None)
    )
    assert [h.failure for h in keys.tls_handshakes] == [failure]
    assert keys.tls_handshakes[0].peer_certificates  # the chain is evidence, recorded
    [tx] = keys.requests
    assert (tx.failure, tx.response, tx.address) == (failure, None, None)
    assert https_server.requests == []  # the server never saw a request
    assert await fds_settle_to(before) == before


async def test_redirect_chain_measures_every_hop(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"http://site.test:{http_server.port}/redirect/2", lab_config(resolver))
    assert [tx.response.code for tx in keys.requests if tx.response] == [302, 302, 200]
    assert [tx.request.url.rsplit("/", 1)[1] for tx in keys.requests] == ["2", "1", "0"]
    assert len(keys.queries) == 6 and len(keys.tcp_connect) == 3  # each hop does its own DNS and TCP
    assert keys.requests[-1].failure is None and keys.requests[-1].response.title == "arrived"  # type: ignore[union-attr]


async def test_cross_host_redirect_resolves_the_new_host(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    resolver.zone["other.test"] = [LOOPBACK]
    url = f"http://site.test:{http_server.port}/to/other.test:{http_server.port}/redirect/0"
    keys = await web.measure(url, lab_config(resolver))
    assert [q.hostname for q in keys.queries] == ["site.test", "site.test", "other.test", "other.test"]
    assert [dict(headers)["Host"] for _, headers in http_server.requests] == [
        f"site.test:{http_server.port}",
        f"other.test:{http_server.port}",
    ]


async def test_on_resolved_gets_the_first_hosts_addresses_once_before_connecting(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    resolver.zone["other.test"] = [LOOPBACK]
    url = f"http://site.test:{http_server.port}/to/other.test:{http_server.port}/redirect/0"
    calls: list[tuple[list[str], int]] = []

    def on_resolved(addresses: list[str]) -> None:
        calls.append((addresses, len(http_server.requests)))

    await web.measure(url, lab_config(resolver), on_resolved=on_resolved)
    # Once, for the URL's own host (not the redirect's), before any request reached the server.
    assert calls == [([LOOPBACK], 0)]
    assert len(http_server.requests) == 2


async def test_redirect_loop_is_too_many_redirects(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(
        f"http://site.test:{http_server.port}/loop", lab_config(resolver, max_redirects=2)
    )
    assert [tx.failure for tx in keys.requests] == [None, None, failures.HTTP_TOO_MANY_REDIRECTS]
    assert len(http_server.requests) == 3


async def test_body_cap_applies(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"http://site.test:{http_server.port}/big", lab_config(resolver, body_cap=100))
    response = keys.requests[0].response
    assert response is not None and response.body_is_truncated and response.body_length == 100


async def test_garbage_response(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"http://site.test:{http_server.port}/garbage", lab_config(resolver))
    assert [tx.failure for tx in keys.requests] == [failures.HTTP_INVALID_RESPONSE]


@pytest.mark.parametrize("behaviour", ["answer", "inject"])
async def test_never_connects_to_a_bogon_answer(
    resolver: FakeResolver, http_server: LoopbackHTTPServer, behaviour: str
) -> None:
    # Plain: the censor's resolver answers 10.10.34.35. Inject: a forged reply with it arrives first.
    resolver.zone["censored.test"] = [FORGED_ADDRESS] if behaviour == "answer" else [LOOPBACK]
    resolver.behaviours["censored.test"] = behaviour
    keys = await web.measure(f"http://censored.test:{http_server.port}/", lab_config(resolver))
    a = keys.queries[0]
    assert [x.ipv4 for x in a.answers] == [FORGED_ADDRESS] and a.answers[0].bogon
    assert keys.tcp_connect == []  # recorded and judged, never visited
    assert [tx.failure for tx in keys.requests] == [failures.DNS_BOGON_ERROR]
    assert http_server.requests == []


async def test_loopback_is_a_bogon_outside_a_lab(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"http://site.test:{http_server.port}/", lab_config(resolver, routable=()))
    assert keys.tcp_connect == [] and http_server.requests == []
    assert keys.requests[0].failure == failures.DNS_BOGON_ERROR


async def test_dns_failure_stops_the_hop(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    resolver.behaviours["gone.test"] = "nxdomain"
    keys = await web.measure(f"http://gone.test:{http_server.port}/", lab_config(resolver))
    assert [q.failure for q in keys.queries] == [failures.DNS_NXDOMAIN_ERROR] * 2
    assert keys.tcp_connect == []
    [tx] = keys.requests
    assert (tx.failure, tx.response) == (failures.DNS_NXDOMAIN_ERROR, None)


async def test_extra_addresses_are_used_but_bogons_skipped(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.behaviours["gone.test"] = "nxdomain"
    extra = ["10.0.0.1", "not-an-ip", LOOPBACK, LOOPBACK]
    keys = await web.measure(f"http://gone.test:{http_server.port}/", lab_config(resolver), extra_addrs=extra)
    assert [c.ip for c in keys.tcp_connect] == [LOOPBACK]
    assert keys.requests[0].failure is None


async def test_extra_addresses_are_not_used_for_another_host(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.behaviours["other.test"] = "nxdomain"
    url = f"http://gone.test:{http_server.port}/to/other.test:{http_server.port}/"
    keys = await web.measure(url, lab_config(resolver), extra_addrs=[LOOPBACK])
    assert [c.ip for c in keys.tcp_connect] == [LOOPBACK]  # only the first hop's
    assert [tx.failure for tx in keys.requests] == [None, failures.DNS_NXDOMAIN_ERROR]


async def test_every_address_is_tried_and_the_first_that_works_is_used(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    # Nothing listens on 127.0.0.2 and 127.0.0.3 at this port: refused (loopback, so still lab-local).
    resolver.zone["site.test"] = ["127.0.0.2", LOOPBACK, "127.0.0.3"]
    keys = await web.measure(f"http://site.test:{http_server.port}/", lab_config(resolver, max_addresses=2))
    assert [(c.ip, c.failure) for c in keys.tcp_connect] == [
        ("127.0.0.2", failures.CONNECTION_REFUSED),
        (LOOPBACK, None),
    ]
    assert keys.requests[0].failure is None and keys.requests[0].address == f"{LOOPBACK}:{http_server.port}"


async def test_all_connects_failing_is_the_request_failure(resolver: FakeResolver, closed_port: int) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    keys = await web.measure(f"http://site.test:{closed_port}/", lab_config(resolver))
    assert [c.failure for c in keys.tcp_connect] == [failures.CONNECTION_REFUSED]
    assert keys.requests[0].failure == failures.CONNECTION_REFUSED


async def test_ip_literal_url_needs_no_dns(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    keys = await web.measure(f"http://{LOOPBACK}:{http_server.port}/", lab_config(resolver))
    assert keys.queries == [] and resolver.seen == []
    assert keys.requests[0].failure is None
    assert dict(http_server.requests[0][1])["Host"] == f"{LOOPBACK}:{http_server.port}"


async def test_sockets_are_closed(resolver: FakeResolver, http_server: LoopbackHTTPServer) -> None:
    resolver.zone["site.test"] = ["127.0.0.2", LOOPBACK]
    config = lab_config(resolver)
    await web.measure(f"http://site.test:{http_server.port}/", config)  # warm up lazy imports and caches
    before = open_fds()
    for path in ("/", "/redirect/1", "/garbage", "/reset", "/big"):
        await web.measure(f"http://site.test:{http_server.port}{path}", config)
    assert await fds_settle_to(before) == before


@pytest.mark.parametrize(
    "url",
    ["ftp://site.test/", "http:///path", "site.test", "http://exa mple.test/", "http://site.test:99999/", ""],
)
async def test_invalid_url_is_a_caller_error(url: str) -> None:
    with pytest.raises(ValueError):
        await web.measure(url)


async def test_the_network_is_done_before_the_linger_ends_and_the_record_still_has_it(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    """The agent starts its next URL when the connections are closed; the late replies are still recorded."""
    resolver.zone["site.test"] = [LOOPBACK]
    linger = 0.4
    config = replace(lab_config(resolver), dns=replace(lab_config(resolver).dns, linger=linger))
    trace = Trace()
    done_at: list[tuple[float, int]] = []

    def on_network_done() -> None:
        done_at.append((trace.now(), len(http_server.requests)))

    keys = await web.measure(
        f"http://site.test:{http_server.port}/", config, trace=trace, on_network_done=on_network_done
    )
    [(at, requests)] = done_at
    assert requests == 1  # after the request was answered
    first_reply = min(reply.t for query in keys.queries for reply in query.replies)
    assert at < first_reply + linger - 0.1  # well before the linger ended
    assert [q.query_type for q in keys.queries] == ["A", "AAAA"]
    assert all(q.t - q.replies[0].t >= linger - 0.05 for q in keys.queries)  # each lingered in full


async def test_the_lingers_of_a_redirect_chain_overlap(
    resolver: FakeResolver, http_server: LoopbackHTTPServer
) -> None:
    resolver.zone["site.test"] = [LOOPBACK]
    linger = 0.3
    config = replace(lab_config(resolver), dns=replace(lab_config(resolver).dns, linger=linger))
    trace = Trace()
    keys = await web.measure(f"http://site.test:{http_server.port}/redirect/2", config, trace=trace)
    # Three hops, each with its own queries, recorded in hop order; the chain took about one linger.
    assert [q.hostname for q in keys.queries] == ["site.test"] * 6
    assert [q.t0 for q in keys.queries] == sorted(q.t0 for q in keys.queries)
    assert [tx.response.code for tx in keys.requests if tx.response] == [302, 302, 200]
    assert trace.now() < 2 * linger


async def test_a_failed_measurement_never_says_its_network_is_done(resolver: FakeResolver) -> None:
    calls: list[None] = []
    with pytest.raises(ValueError):
        await web.measure(
            "ftp://site.test/", lab_config(resolver), on_network_done=lambda: calls.append(None)
        )
    assert calls == []

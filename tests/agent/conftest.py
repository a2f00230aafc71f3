"""Builders for the agent's tests: a measurement in which a volunteer's addresses turn up everywhere."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.agent import netinfo
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.settings import QueueSettings
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP
from gatewatch.core.envelope import sign
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import (
    Certificate,
    DNSAnswer,
    DNSQuery,
    DNSReply,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
    TLSHandshake,
)
from gatewatch.core.verdicts import Fingerprint, LayerVerdict, Verdict
from gatewatch.probes import dns as probes_dns

OWN_V4 = "203.0.113.7"
OWN_V6 = "2001:db8:1::7"
LAN_RESOLVER = "192.168.1.1"
CENSOR_ANSWER = "10.10.34.35"
T0 = datetime(2026, 11, 23, 13, 40, tzinfo=UTC)


def echoing_keys(v4: str = OWN_V4, v6: str = OWN_V6, resolver: str = f"{LAN_RESOLVER}:53") -> WebTestKeys:
    """Test keys as if a server, a resolver and an injector had echoed the volunteer's addresses back
    in every place an address can appear."""
    body = f"<html><title>Your IP is {v4}</title><p>v6: {v6.upper()}</p></html>"
    return WebTestKeys(
        queries=[
            DNSQuery(
                resolver_address=resolver,
                hostname="echo.example",
                query_type="A",
                t0=0.0,
                t=0.01,
                rcode="NOERROR",
                answers=[
                    DNSAnswer(answer_type="A", ipv4=v4),
                    DNSAnswer(answer_type="A", ipv4=CENSOR_ANSWER, bogon=True),
                ],
                replies=[
                    DNSReply(
                        t=0.01,
                        rcode="NOERROR",
                        answers=[DNSAnswer(answer_type="A", ipv4=v4)],
                        wire_sha256=hashlib.sha256(v4.encode()).hexdigest(),
                    )
                ],
            ),
            DNSQuery(
                resolver_address=resolver,
                hostname="echo.example",
                query_type="AAAA",
                t0=0.0,
                t=0.01,
                answers=[
                    DNSAnswer(answer_type="AAAA", ipv6=v6),
                    DNSAnswer(answer_type="CNAME", hostname=f"{'-'.join(v4.split('.'))}.nip.example"),
                ],
            ),
        ],
        tcp_connect=[
            TCPConnect(
                ip="198.51.100.10",
                port=443,
                t0=0.02,
                t=0.03,
                success=False,
                failure=f"unknown_failure: bind {v4}",
            )
        ],
        tls_handshakes=[
            TLSHandshake(
                address="198.51.100.10:443",
                server_name="echo.example",
                t0=0.03,
                t=0.04,
                peer_certificates=[
                    Certificate(
                        subject=f"CN={v4}",
                        issuer="CN=Lab",
                        sans=[v4, v6],
                        not_before="2026-01-01T00:00:00Z",
                        not_after="2027-01-01T00:00:00Z",
                        sha256="00" * 32,
                    )  # fmt: skip
                ],
            )
        ],
        requests=[
            HTTPTransaction(
                t0=0.05,
                t=0.06,
                address="198.51.100.10:80",
                request=HTTPRequest(url=f"http://echo.example/?ip={v4}", headers=[("X-Forwarded-For", v4)]),
                response=HTTPResponse(
                    code=200,
                    headers=[
                        ("X-Client-IP", v4),
                        ("X-Client-IPv6", f"[{v6}]:5555"),
                        ("Location", f"http://{v4}/"),
                    ],
                    body=body,
                    body_length=len(body),
                    body_sha256=hashlib.sha256(body.encode()).hexdigest(),
                    title=f"Your IP is {v4}",
                ),
            )
        ],
        control=ControlObservations(
            dns=ControlDNS(addrs=["198.51.100.10"]),
            tcp_connect={f"{v4}:443": ControlTCP(status=False, failure="connection_refused")},
            http_request=ControlHTTP(status_code=200, title="Echo"),
        ),
        verdict=Verdict(
            blocking="dns",
            accessible=False,
            layers=[LayerVerdict(layer="dns", outcome="interference", rule_id="dns.injection", reason="x")],
            fingerprint=Fingerprint(technique="dns.injection", stage="dns", injected_ips=[CENSOR_ANSWER, v4]),
        ),
    )


def make_measurement(keys: WebTestKeys | None = None, url: str = "http://echo.example/") -> Measurement:
    return Measurement(
        measurement_start_time=T0,
        test_start_time=T0,
        test_runtime=0.1,
        probe_asn="AS64501",
        probe_cc="XL",
        input=url,
        test_keys=keys if keys is not None else WebTestKeys(),
    )


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def fill_queue(tmp_path, signing_key) -> Callable[..., tuple[MeasurementQueue, list[str]]]:
    """A queue in a tmp dir with ``n`` signed measurements; returns (queue, uids in order)."""
    opened: list[MeasurementQueue] = []

    def fill(n: int, limits: QueueSettings | None = None) -> tuple[MeasurementQueue, list[str]]:
        queue = MeasurementQueue(tmp_path / "queue.sqlite3", limits)
        opened.append(queue)
        uids = []
        for i in range(n):
            m = make_measurement(url=f"http://site{i}.example/")
            payload = m.to_json_bytes()
            queue.enqueue(m.measurement_uid, payload, sign(payload, signing_key))
            uids.append(m.measurement_uid)
        return queue, uids

    yield fill
    for queue in opened:
        queue.close()


@pytest.fixture(autouse=True)
def _route_lookups_stay_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent learns its own addresses with a UDP connect toward public resolvers. That sends no packet,
    but tests aim at nothing outside loopback at all: such lookups answer "no route" here."""
    real = netinfo.local_address_toward

    def loopback_only(ip: str) -> str | None:
        try:
            inside = ipaddress.ip_address(ip).is_loopback
        except ValueError:
            inside = True  # let the real function reject it
        return real(ip) if inside else None

    monkeypatch.setattr(netinfo, "local_address_toward", loopback_only)


@pytest.fixture(autouse=True)
def _system_resolver_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass looks up the reverse-DNS names of the agent's public addresses with the resolver it measures
    with; tests that give none would reach the machine's real resolver. Here that is a closed port on
    loopback: the lookup fails at once and the pass goes on without names."""
    monkeypatch.setattr(probes_dns, "system_resolver", lambda *args, **kwargs: "127.0.0.1:9")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (as a program should); tests put it back as they found it, so
    a handler on a closed test stream or a lowered level never leaks into later tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    agent_level = logging.getLogger("gatewatch.agent").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("gatewatch.agent").setLevel(agent_level)

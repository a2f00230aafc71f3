"""The DNS probe against a fake resolver on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gatewatch.core import failures
from gatewatch.probes import dns
from gatewatch.probes.config import DNSConfig
from gatewatch.probes.trace import Trace

from .conftest import FORGED_ADDRESS, FakeResolver

PUBLIC_V4 = "93.184.215.14"  # answers only: these tests never connect anywhere but the fake resolver
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def config(resolver: FakeResolver, **overrides: object) -> DNSConfig:
    settings: dict[str, object] = {"resolver": resolver.address, "timeout": 1.0, "linger": 0.05}
    settings.update(overrides)
    return DNSConfig(**settings)  # type: ignore[arg-type]


async def test_answers_a_and_aaaa_from_first_reply(resolver: FakeResolver) -> None:
    resolver.zone["site.test"] = [PUBLIC_V4, PUBLIC_V6]
    queries = await dns.measure("site.test", config(resolver), Trace())
    assert [q.query_type for q in queries] == ["A", "AAAA"]
    a, aaaa = queries
    assert a.failure is None and a.rcode == "NOERROR" and a.engine == "udp"
    assert a.resolver_address == resolver.address and a.hostname == "site.test"
    assert [(x.answer_type, x.ipv4, x.ttl, x.bogon) for x in a.answers] == [("A", PUBLIC_V4, 300, False)]
    assert [(x.answer_type, x.ipv6) for x in aaaa.answers] == [("AAAA", PUBLIC_V6)]
    assert len(a.replies) == 1 and a.replies[0].answers == a.answers
    assert len(a.replies[0].wire_sha256 or "") == 64
    assert 0 <= a.t0 <= a.t and not a.truncated_retry_over_tcp


async def test_resolve_orders_a_before_aaaa_and_deduplicates(resolver: FakeResolver) -> None:
    resolver.zone["site.test"] = [PUBLIC_V6, PUBLIC_V4, PUBLIC_V4]
    queries, addresses = await dns.resolve("site.test", config(resolver), Trace())
    assert len(queries) == 2
    assert addresses == [PUBLIC_V4, PUBLIC_V6]


async def test_resolve_an_ip_literal_needs_no_dns(resolver: FakeResolver) -> None:
    assert await dns.resolve("192.0.2.7", config(resolver), Trace()) == ([], ["192.0.2.7"])
    assert await dns.resolve("[::1]", config(resolver), Trace()) == ([], ["::1"])
    assert resolver.seen == []


async def test_cname_is_recorded_and_followed_to_the_address(resolver: FakeResolver) -> None:
    resolver.cnames["www.site.test"] = "site.test"
    resolver.zone["site.test"] = [PUBLIC_V4]
    queries, addresses = await dns.resolve("www.site.test", config(resolver, query_types=("A",)), Trace())
    assert [(x.answer_type, x.hostname or x.ipv4) for x in queries[0].answers] == [
        ("CNAME", "site.test"),
        ("A", PUBLIC_V4),
    ]
    assert addresses == [PUBLIC_V4]


async def test_bogon_answers_are_flagged_unless_declared_routable(resolver: FakeResolver) -> None:
    resolver.zone["site.test"] = ["127.0.0.1", FORGED_ADDRESS]
    plain = (await dns.measure("site.test", config(resolver, query_types=("A",)), Trace()))[0]
    assert [x.bogon for x in plain.answers] == [True, True]
    lab = config(resolver, query_types=("A",), routable=("127.0.0.0/8",))
    labbed = (await dns.measure("site.test", lab, Trace()))[0]
    assert [x.bogon for x in labbed.answers] == [False, True]


@pytest.mark.parametrize(
    ("behaviour", "failure", "rcode"),
    [
        ("nxdomain", failures.DNS_NXDOMAIN_ERROR, "NXDOMAIN"),
        ("servfail", failures.DNS_SERVFAIL_ERROR, "SERVFAIL"),
        ("refused", failures.DNS_REFUSED_ERROR, "REFUSED"),
    ],
)
async def test_error_rcodes(resolver: FakeResolver, behaviour: str, failure: str, rcode: str) -> None:
    resolver.behaviours["blocked.test"] = behaviour
    queries = await dns.measure("blocked.test", config(resolver), Trace())
    assert [(q.failure, q.rcode, q.answers) for q in queries] == [(failure, rcode, [])] * 2


async def test_noerror_without_an_address_of_the_type_is_no_answer(resolver: FakeResolver) -> None:
    resolver.zone["v4only.test"] = [PUBLIC_V4]
    a, aaaa = await dns.measure("v4only.test", config(resolver), Trace())
    assert a.failure is None
    assert (aaaa.failure, aaaa.rcode, aaaa.answers) == (failures.DNS_NO_ANSWER, "NOERROR", [])


async def test_silence_is_a_timeout(resolver: FakeResolver) -> None:
    resolver.behaviours["silent.test"] = "silent"
    queries = await dns.measure("silent.test", config(resolver, timeout=0.3), Trace())
    for query in queries:
        assert (query.failure, query.rcode, query.replies) == (failures.GENERIC_TIMEOUT_ERROR, None, [])
        assert 0.3 <= query.t - query.t0 < 3.0  # stopped by the timeout, not hung (loose: CI is loaded)


async def test_injected_reply_and_real_reply_are_both_recorded(resolver: FakeResolver) -> None:
    resolver.zone["censored.test"] = [PUBLIC_V4]
    resolver.behaviours["censored.test"] = "inject"
    query = (await dns.measure("censored.test", config(resolver, query_types=("A",), linger=0.3), Trace()))[0]
    # The stub believes the forged reply that came first; the real one is recorded after it.
    assert [a.ipv4 for a in query.answers] == [FORGED_ADDRESS]
    assert query.answers[0].bogon is True
    assert [[a.ipv4 for a in r.answers] for r in query.replies] == [[FORGED_ADDRESS], [PUBLIC_V4]]
    first, second = query.replies
    assert first.wire_sha256 != second.wire_sha256
    assert 0.02 <= second.t - first.t < 1.0
    _, addresses = await dns.resolve("censored.test", config(resolver, query_types=("A",)), Trace())
    assert addresses == [FORGED_ADDRESS]


async def test_without_linger_only_the_first_reply_is_kept(resolver: FakeResolver) -> None:
    resolver.zone["censored.test"] = [PUBLIC_V4]
    resolver.behaviours["censored.test"] = "inject"
    query = (await dns.measure("censored.test", config(resolver, query_types=("A",), linger=0.0), Trace()))[0]
    assert len(query.replies) == 1


async def test_truncated_reply_is_retried_over_tcp(resolver: FakeResolver) -> None:
    resolver.zone["big.test"] = [PUBLIC_V4]
    resolver.behaviours["big.test"] = "truncate"
    query = (await dns.measure("big.test", config(resolver, query_types=("A",)), Trace()))[0]
    assert query.truncated_retry_over_tcp is True and query.engine == "tcp"
    assert query.failure is None and [a.ipv4 for a in query.answers] == [PUBLIC_V4]
    assert [len(r.answers) for r in query.replies] == [0, 1]  # the truncated UDP reply, then TCP's
    assert [s[3] for s in resolver.seen] == ["udp", "tcp"]


async def test_unreachable_resolver_port_is_classified(closed_udp_port: int) -> None:
    cfg = DNSConfig(resolver=f"127.0.0.1:{closed_udp_port}", timeout=1.0, query_types=("A",))
    query = (await dns.measure("site.test", cfg, Trace()))[0]
    # The kernel's ICMP port-unreachable comes back on the connected UDP socket as ECONNREFUSED.
    assert query.failure == failures.CONNECTION_REFUSED
    assert query.t - query.t0 < 2.0  # long before the timeout


async def test_queries_leave_from_the_source_address(resolver: FakeResolver) -> None:
    resolver.zone["site.test"] = [PUBLIC_V4]
    resolver.behaviours["big.test"] = "truncate"
    await dns.measure("site.test", config(resolver, source_address="127.0.0.2"), Trace())
    await dns.measure("big.test", config(resolver, source_address="127.0.0.2", query_types=("A",)), Trace())
    assert {source for _, _, source, _ in resolver.seen} == {"127.0.0.2"}
    assert {transport for *_, transport in resolver.seen} == {"udp", "tcp"}


async def test_reply_hash_is_of_the_wire_bytes(resolver: FakeResolver) -> None:
    resolver.zone["site.test"] = [PUBLIC_V4]
    resolver.behaviours["censored.test"] = "inject"
    plain = (await dns.measure("site.test", config(resolver, query_types=("A",)), Trace()))[0]
    injected = (
        await dns.measure("censored.test", config(resolver, query_types=("A",), linger=0.3), Trace())
    )[0]
    digests = [r.wire_sha256 for q in (plain, injected) for r in q.replies]
    assert digests == [hashlib.sha256(wire).hexdigest() for wire in resolver.sent]


def test_invalid_hostname_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        dns._check_hostname("a" * 64 + ".test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
    ],
)
def test_parse_resolver(text: str, expected: tuple[str, int]) -> None:
    assert dns.parse_resolver(text) == expected


@pytest.mark.parametrize("text", ["resolver.example", "192.0.2.53:0", "192.0.2.53:70000", "[2001:db8::53"])
def test_parse_resolver_rejects_non_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        dns.parse_resolver(text)


def test_system_resolver_reads_first_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch lan\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    assert dns.system_resolver(conf) == "192.0.2.53"
    conf.write_text("search lan\n")
    assert dns.system_resolver(conf) == "127.0.0.1"
    assert dns.system_resolver(tmp_path / "absent") == "127.0.0.1"


async def test_resolve_early_answers_before_the_linger_ends(resolver: FakeResolver) -> None:
    """The stub's addresses come with the first reply; the late (real) reply still lands in the record."""
    resolver.behaviours["censored.test"] = "inject"
    cfg = config(resolver, query_types=("A",), linger=0.5)
    trace = Trace()
    resolution = await dns.resolve_early("censored.test", cfg, trace)
    answered_at = trace.now()
    assert resolution.addresses == [FORGED_ADDRESS]
    (query,) = await resolution.queries()
    assert len(query.replies) == 2 and query.t - query.replies[0].t >= 0.45
    assert answered_at < query.replies[0].t + 0.4  # did not wait for the linger to end


async def test_reverse_names_are_the_ptr_targets(resolver: FakeResolver) -> None:
    resolver.pointers["7.113.0.203.in-addr.arpa"] = ["Customer-42.Dyn.ISP.example", "alias.isp.example"]
    resolver.pointers["7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"] = [
        "v6.isp.example"
    ]
    config = DNSConfig(resolver=resolver.address, timeout=1.0)
    found = await dns.reverse_names("203.0.113.7", config)  # an RRset's records come in no fixed order
    assert sorted(found) == ["alias.isp.example", "customer-42.dyn.isp.example"]
    assert await dns.reverse_names("2001:db8:1::7", config) == ["v6.isp.example"]
    assert ("7.113.0.203.in-addr.arpa", "PTR", "127.0.0.1", "udp") in resolver.seen


async def test_reverse_names_are_empty_when_there_are_none_or_the_lookup_fails(
    resolver: FakeResolver,
) -> None:
    config = DNSConfig(resolver=resolver.address, timeout=5.0)
    assert await dns.reverse_names("203.0.113.8", config) == []  # no PTR record
    resolver.behaviours["9.113.0.203.in-addr.arpa"] = "nxdomain"
    assert await dns.reverse_names("203.0.113.9", config) == []
    resolver.behaviours["10.113.0.203.in-addr.arpa"] = "silent"
    assert await dns.reverse_names("203.0.113.10", config, wait=0.2) == []  # gives up after `wait`
    assert await dns.reverse_names("not an address", config) == []
    assert await dns.reverse_names("203.0.113.7", DNSConfig(resolver="not a resolver")) == []

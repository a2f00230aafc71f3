"""The fast DNS wire path (probes/dns_wire.py) against dnspython: the same query bytes, and every reply it
reads directly read as dnspython reads it (or refused as dnspython refuses it)."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.probes.config import DNSConfig
from gatewatch.probes.dns import _reply
from gatewatch.probes.dns_wire import PlainReply, is_plain_name, make_query, parse_reply

_LABEL = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=63)
_HOSTNAME = st.builds(
    lambda labels, dot: ".".join(labels) + ("." if dot else ""),
    st.lists(_LABEL, min_size=1, max_size=6),
    st.booleans(),
)
_V4 = st.binary(min_size=4, max_size=4)
_V6 = st.binary(min_size=16, max_size=16)
_RECORD = st.one_of(
    st.tuples(st.just(dns.rdatatype.A), _V4, st.integers(0, 2**32 - 1)),
    st.tuples(st.just(dns.rdatatype.AAAA), _V6, st.integers(0, 2**32 - 1)),
)


def _dnspython_view(query, wire: bytes):
    """What the probe takes from a reply, as dnspython reads it: None (refused), else flags, rcode and the
    A/AAAA rrsets as (type, TTL, addresses)."""
    try:
        msg = dns.message.from_wire(wire)
    except Exception:
        return None
    if not query.message.is_response(msg):
        return None
    rrsets = [
        (rrset.rdtype, rrset.ttl, [rdata.address for rdata in rrset])
        for rrset in msg.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.rdclass == dns.rdataclass.IN
    ]
    return int(msg.flags), msg.rcode(), rrsets


def _reply_wire(query, records, *, flags: int = 0x8180, upper: bool = False) -> bytes:
    """A reply to ``query`` with ``records`` (type, rdata, TTL) each owned by the question's name (a
    pointer to it), written by hand so that repeats and interleavings are kept as given."""
    question = query.wire[12:]
    if upper:
        question = question.upper()
    body = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", rdtype, 1, ttl, len(rdata)) + rdata
        for rdtype, rdata, ttl in records
    )
    return struct.pack("!HHHHHH", query.id, flags, 1, len(records), 0, 0) + question + body


@settings(max_examples=300, deadline=None)
@given(_HOSTNAME, st.sampled_from(["A", "AAAA"]))
def test_a_plain_query_is_the_bytes_dnspython_writes(hostname: str, query_type: str) -> None:
    query = make_query(hostname, query_type)
    assert query.question  # the fast path wrote it
    assert query.wire == dns.message.make_query(hostname, query_type, id=query.id).to_wire()
    assert is_plain_name(hostname)
    dns.name.from_text(hostname)  # what is_plain_name lets through, dnspython takes


@pytest.mark.parametrize(
    ("hostname", "query_type"),
    [("example.com", "PTR"), ("b\u00fccher.example", "A"), ("a b.example", "A"), ("x." * 130, "A")],
)
def test_other_queries_are_dnspython_s(hostname: str, query_type: str) -> None:
    """Another type, a name needing IDNA or escapes, or one too long: dnspython writes it (or refuses)."""
    try:
        dns.message.make_query(hostname, query_type)
    except Exception as exc:
        with pytest.raises(type(exc)):
            make_query(hostname, query_type)
        return
    query = make_query(hostname, query_type)
    assert not query.question
    assert query.wire == dns.message.make_query(hostname, query_type, id=query.id).to_wire()


@settings(max_examples=400, deadline=None)
@given(
    _HOSTNAME,
    st.sampled_from(["A", "AAAA"]),
    st.lists(_RECORD, max_size=8),
    st.sampled_from([0x8180, 0x8183, 0x8382, 0x8580, 0x0180, 0x8980]),
    st.booleans(),
)
def test_a_plain_reply_is_read_as_dnspython_reads_it(hostname, query_type, records, flags, upper) -> None:
    """Repeated addresses, interleaved types, any TTLs, the question in another case, truncated, error
    and non-response flags: read directly, or refused, exactly where dnspython reads or refuses."""
    query = make_query(hostname, query_type)
    records = records + records[:2]  # repeats: kept once, the smaller TTL wins
    wire = _reply_wire(query, records, flags=flags, upper=upper)
    reply = parse_reply(query, wire)
    expected = _dnspython_view(query, wire)
    if reply is None:
        assert expected is None
        return
    assert isinstance(reply, PlainReply)
    assert (reply.flags, reply.rcode(), reply.rrsets) == expected
    config = DNSConfig(routable=("127.0.0.0/8",))
    assert _reply(reply, wire, 0.5, config) == _reply(dns.message.from_wire(wire), wire, 0.5, config)


@settings(max_examples=400, deadline=None)
@given(_HOSTNAME, st.lists(_RECORD, min_size=1, max_size=4), st.data())
def test_a_damaged_reply_is_refused_or_read_as_dnspython_does(hostname, records, data) -> None:
    """Bytes changed, cut or added anywhere: whatever the fast path reads, dnspython reads the same."""
    query = make_query(hostname, "A")
    wire = bytearray(_reply_wire(query, records))
    action = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if action == "flip":
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] = data.draw(st.integers(0, 255))
    elif action == "cut":
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=8))
    reply = parse_reply(query, bytes(wire))
    expected = _dnspython_view(query, bytes(wire))
    if isinstance(reply, PlainReply):
        assert (reply.flags, reply.rcode(), reply.rrsets) == expected
    else:
        assert (reply is None) == (expected is None)


def test_a_reply_with_more_than_addresses_goes_to_dnspython() -> None:
    """A CNAME, an authority section, EDNS: not plain, so dnspython reads it (a Message comes back)."""
    query = make_query("www.example.com", "A")
    response = dns.message.make_response(query.message)
    response.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "CNAME", "cdn.example.net."))
    response.answer.append(dns.rrset.from_text("cdn.example.net.", 60, "IN", "A", "192.0.2.1"))
    reply = parse_reply(query, response.to_wire())
    assert isinstance(reply, dns.message.Message) and len(reply.answer) == 2
    response = dns.message.make_response(query.message)
    response.authority.append(
        dns.rrset.from_text("example.com.", 60, "IN", "SOA", "ns.example.com. h.example.com. 1 2 3 4 5")
    )
    response.set_rcode(dns.rcode.NXDOMAIN)
    reply = parse_reply(query, response.to_wire())
    assert isinstance(reply, dns.message.Message) and reply.rcode() == dns.rcode.NXDOMAIN


def test_a_reply_to_another_query_is_refused() -> None:
    query = make_query("www.example.com", "A")
    other = make_query("www.example.org", "A")
    wire = _reply_wire(other, [(dns.rdatatype.A, b"\xc0\x00\x02\x01", 60)])
    wire = struct.pack("!H", query.id) + wire[2:]  # the right id, the wrong question
    assert parse_reply(query, wire) is None
    wire = _reply_wire(query, [(dns.rdatatype.A, b"\xc0\x00\x02\x01", 60)])
    assert parse_reply(query, struct.pack("!H", query.id ^ 1) + wire[2:]) is None  # the wrong id
    assert isinstance(parse_reply(query, wire), PlainReply)
    assert dns.flags.QR & parse_reply(query, wire).flags

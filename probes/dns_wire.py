"""DNS queries and replies on the wire without dnspython's object model where the message is plain.

Most queries the probe asks are A or AAAA for an ordinary host name, and most replies to them are the
question and a few A or AAAA records owned by the name asked: building a dnspython ``Message`` for such
a query and parsing such a reply into rrsets costs several times what the probe's own work on them does
(issue 16). Here the query is written directly (the same bytes ``dns.message.make_query`` writes) and a
reply of exactly that plain shape is read directly. Anything else (another query type, a name that needs
escaping or IDNA, a reply with a CNAME, an authority or additional section, EDNS, compression other than
the owner pointing at the question, a bad length, trailing bytes) goes to dnspython, as before: the fast
path only ever accepts replies dnspython accepts, and reads them as dnspython does (rrsets of one type
grouped in order of appearance, their TTL the smallest given (one over 2^31 - 1 read as 0), a repeated
address kept once).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import dns.entropy
import dns.exception
import dns.flags
import dns.ipv4
import dns.ipv6
import dns.message
import dns.rdatatype

__all__ = ["PlainReply", "Reply", "WireQuery", "is_plain_name", "make_query", "parse_reply"]

_LABELS = re.compile(r"^[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
_PLAIN_TYPES = {"A": dns.rdatatype.A, "AAAA": dns.rdatatype.AAAA}
_ADDRESS_SIZE = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 16}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_QUESTION_OWNER = b"\xc0\x0c"  # a compression pointer to the question's name (offset 12)
_CLASS_IN = 1
_OPCODE_MASK = 0x7800
_RCODE_MASK = 0x000F
_MAX_NAME = 255
_MAX_TTL = 0x7FFFFFFF


@dataclass(frozen=True)
class WireQuery:
    """A query as sent: its bytes, and what a reply must echo. ``message`` is dnspython's, built only when
    needed (a query the fast path does not write, or a reply it does not read)."""

    hostname: str
    query_type: str
    id: int
    wire: bytes
    question: bytes = b""  # the question section, lower case (empty: not a plain query)
    _message: list[dns.message.Message] = field(default_factory=list, compare=False, repr=False)

    @property
    def message(self) -> dns.message.Message:
        if not self._message:
            self._message.append(dns.message.make_query(self.hostname, self.query_type, id=self.id))
        return self._message[0]


@dataclass(frozen=True)
class PlainReply:
    """A reply read by the fast path: its header flags and rcode, and its answer rrsets as dnspython would
    give them: (type, TTL, addresses as text) in order of appearance."""

    flags: int
    rcode_value: int
    rrsets: list[tuple[int, int, list[str]]]

    def rcode(self) -> int:
        return self.rcode_value


Reply = PlainReply | dns.message.Message


def _plain_name(hostname: str) -> bytes | None:
    """The wire form of ``hostname`` (without the root label) when it needs no escaping nor IDNA and fits
    in a DNS name, else None."""
    if not _LABELS.match(hostname):
        return None
    name = b"".join(
        len(label).to_bytes(1, "big") + label for label in hostname.rstrip(".").encode("ascii").split(b".")
    )
    return name if len(name) + 1 <= _MAX_NAME else None


def is_plain_name(hostname: str) -> bool:
    """Whether ``hostname`` is a DNS name needing no escape nor IDNA (``dns.name.from_text`` takes it)."""
    return _plain_name(hostname) is not None


def make_query(hostname: str, query_type: str) -> WireQuery:
    """A recursive query (RD) of ``query_type`` for ``hostname``, its id random as dnspython's is.

    Raises what ``dns.message.make_query`` raises for a name or type it refuses."""
    rdtype = _PLAIN_TYPES.get(query_type)
    name = _plain_name(hostname) if rdtype is not None else None
    if rdtype is None or name is None:
        message = dns.message.make_query(hostname, query_type)
        return WireQuery(hostname, query_type, message.id, message.to_wire(), _message=[message])
    query_id = dns.entropy.random_16()
    question = name + b"\x00" + struct.pack("!HH", rdtype, _CLASS_IN)
    wire = _HEADER.pack(query_id, dns.flags.RD, 1, 0, 0, 0) + question
    return WireQuery(hostname, query_type, query_id, wire, question.lower())


def parse_reply(query: WireQuery, wire: bytes) -> Reply | None:
    """The reply if ``wire`` answers ``query`` (same id and question), else None: read directly when it
    is plain (see the module docstring), by dnspython otherwise."""
    plain = _plain_reply(query, wire)
    if plain is not None:
        return plain
    try:
        msg = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None
    return msg if query.message.is_response(msg) else None


def _plain_reply(query: WireQuery, wire: bytes) -> PlainReply | None:
    """The reply read directly, or None when it is not plain (dnspython then decides)."""
    question = query.question
    end = 12 + len(question)
    if not question or len(wire) < end:
        return None
    reply_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if (
        reply_id != query.id
        or not flags & dns.flags.QR
        or flags & _OPCODE_MASK  # not QUERY, as ours is
        or (qdcount, nscount, arcount) != (1, 0, 0)
        or wire[12:end].lower() != question  # name case aside, as dnspython compares names
    ):
        return None
    rrsets: dict[int, tuple[int, list[str], set[bytes]]] = {}
    offset = end
    for _ in range(ancount):
        if wire[offset : offset + 2] != _QUESTION_OWNER or len(wire) < offset + 12:
            return None
        rdtype, rdclass, ttl, rdlength = _RR.unpack_from(wire, offset + 2)
        offset += 12
        if rdclass != _CLASS_IN or _ADDRESS_SIZE.get(rdtype) != rdlength or len(wire) < offset + rdlength:
            return None
        rdata = wire[offset : offset + rdlength]
        offset += rdlength
        if ttl > _MAX_TTL:
            ttl = 0  # RFC 2181 section 8, as dnspython reads it
        known = rrsets.get(rdtype)
        if known is None:
            rrsets[rdtype] = (ttl, [_address_text(rdtype, rdata)], {rdata})
            continue
        low, texts, seen = known
        if ttl < low:
            rrsets[rdtype] = (ttl, texts, seen)
        if rdata not in seen:
            seen.add(rdata)
            texts.append(_address_text(rdtype, rdata))
    if offset != len(wire):
        return None  # trailing bytes: dnspython refuses the reply
    return PlainReply(
        flags=flags,
        rcode_value=flags & _RCODE_MASK,
        rrsets=[(rdtype, ttl, texts) for rdtype, (ttl, texts, _) in rrsets.items()],
    )


def _address_text(rdtype: int, rdata: bytes) -> str:
    return dns.ipv4.inet_ntoa(rdata) if rdtype == dns.rdatatype.A else dns.ipv6.inet_ntoa(rdata)

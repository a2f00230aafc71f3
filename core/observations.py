"""What the probes saw: one typed, timed record per network step.

Field names follow OONI's data format where OONI has one (``queries``, ``tcp_connect``,
``tls_handshakes``, ``requests``; ``t0``/``t`` in seconds since the measurement started; ``failure`` a
string from :mod:`gatewatch.core.failures` or ``None``). Nothing here holds the probe's own address.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .vocabulary import TraceStatus, TraceTrigger

__all__ = [
    "Certificate",
    "DNSAnswer",
    "DNSQuery",
    "DNSReply",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPTransaction",
    "HopProbe",
    "PacketTrace",
    "TracedPacket",
    "TCPConnect",
    "TLSHandshake",
]


class _Model(BaseModel):
    # Unknown fields are rejected so that a typo in a producer, or a field smuggled into a submission,
    # is caught at the boundary instead of being stored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DNSAnswer(_Model):
    answer_type: Literal["A", "AAAA", "CNAME"]
    ipv4: str | None = None
    ipv6: str | None = None
    hostname: str | None = None
    ttl: int | None = None
    # Filled where an IP→ASN database is at hand (the collector's, or a lab's); the agent leaves it empty.
    asn: int | None = None
    # True for private, loopback, link-local, reserved and other non-routable answers (v4 and v6).
    bogon: bool = False

    @property
    def address(self) -> str | None:
        return self.ipv4 or self.ipv6


class DNSReply(_Model):
    """One reply datagram received for a query (an on-path injector's forged reply is one of these)."""

    t: float
    rcode: str  # "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ...
    answers: list[DNSAnswer] = Field(default_factory=list)
    # SHA-256 (hex) of the reply's wire bytes, so two replies can be told apart without storing them.
    wire_sha256: str | None = None


class DNSQuery(_Model):
    """One question (hostname, type) asked of one resolver, with every reply that came back."""

    engine: Literal["udp", "tcp", "system"] = "udp"
    resolver_address: str  # "ip:port"
    hostname: str
    query_type: Literal["A", "AAAA"]
    t0: float
    t: float
    # The outcome as the probe's stub resolver would see it: from the first reply (or the failure).
    failure: str | None = None
    rcode: str | None = None
    answers: list[DNSAnswer] = Field(default_factory=list)
    # Every reply received, in arrival order, including those after the first (injection shows as 2+).
    replies: list[DNSReply] = Field(default_factory=list)
    truncated_retry_over_tcp: bool = False


class TCPConnect(_Model):
    ip: str
    port: int
    t0: float
    t: float
    success: bool
    failure: str | None = None


class Certificate(_Model):
    subject: str
    issuer: str
    sans: list[str] = Field(default_factory=list)
    not_before: str  # ISO 8601 UTC
    not_after: str
    sha256: str  # of the DER encoding, hex
    der_b64: str | None = None


class TLSHandshake(_Model):
    address: str  # "ip:port"
    server_name: str
    t0: float
    t: float
    failure: str | None = None
    tls_version: str | None = None  # "TLSv1.3"
    cipher_suite: str | None = None
    negotiated_protocol: str | None = None  # ALPN
    peer_certificates: list[Certificate] = Field(default_factory=list)
    # Whether the chain validated for server_name against the roots used (system or a given CA file).
    # A handshake is made without verification first so that the chain is recorded even when invalid;
    # then the validation outcome is recorded here and, when invalid, as ``failure``.
    validated: bool = False
    # The stage at which the handshake failed, e.g. "after_client_hello", "during_handshake".
    failure_stage: str | None = None


class HTTPRequest(_Model):
    method: str = "GET"
    url: str
    headers: list[tuple[str, str]] = Field(default_factory=list)


class HTTPResponse(_Model):
    code: int
    headers: list[tuple[str, str]] = Field(default_factory=list)
    body: str | None = None  # decoded as UTF-8 with replacement; up to the body cap
    body_is_truncated: bool = False
    body_length: int = 0  # bytes received (capped)
    body_sha256: str | None = None  # of the bytes received
    title: str | None = None


class HTTPTransaction(_Model):
    """One request/response exchange (one hop when following redirects)."""

    t0: float
    t: float
    address: str | None = None  # "ip:port" the request went to
    transport: Literal["tcp", "tls"] = "tcp"
    request: HTTPRequest
    response: HTTPResponse | None = None
    failure: str | None = None


class TracedPacket(_Model):
    """One packet that came back after a trigger: its headers, never its addresses or its payload."""

    delay: float  # seconds from the trigger leaving to this packet arriving
    ttl: int  # the IP TTL on arrival
    ip_id: int
    df: bool
    protocol: Literal["udp", "tcp"]
    tcp_flags: str | None = None  # "R", "RA", "PA", "FA", ... (scapy's letters)
    tcp_window: int | None = None
    payload_size: int
    dns_rcode: str | None = None  # for a DNS reply
    dns_answers: list[str] = Field(default_factory=list, max_length=16)  # its A records


class HopProbe(_Model):
    """The trigger re-sent with a limited IP TTL: did anything answer it from ``ttl`` hops or nearer?

    Hop addresses are never recorded (those inside the volunteer's own network are the volunteer's ISP,
    and so its location): the hop count is the evidence."""

    ttl: int
    answered: bool
    first: TracedPacket | None = None


class PacketTrace(_Model):
    """Packet-level evidence for one interfered flow (``docs/packet-evidence.md``)."""

    trigger: TraceTrigger
    hostname: str
    status: TraceStatus
    skip_reason: str | None = None
    # After a trigger sent with the system's TTL: every packet that came back, in arrival order.
    packets: list[TracedPacket] = Field(default_factory=list, max_length=32)
    # The same trigger with TTL 1..N (N bounded), and the same for a control name nobody blocks.
    hops: list[HopProbe] = Field(default_factory=list, max_length=32)
    control_hostname: str | None = None
    control_hops: list[HopProbe] = Field(default_factory=list, max_length=32)
    # The nearest TTL that got an answer for the trigger, and for the control: an answer to the trigger
    # nearer than the control's (the server's distance) was sent by a box on the path at that hop.
    answer_hop: int | None = None
    control_answer_hop: int | None = None
    injection_hop: int | None = None

"""Probe configurations: plain frozen dataclasses with defaults that suit a volunteer's machine.

Lab knobs (a resolver, a CA file, a source address, ranges treated as routable) exist so that the
*unmodified* probes can run inside the emulated network; the probes never know they are in a lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DNSConfig", "HTTPConfig", "TCPConfig", "TLSConfig", "WebConfig"]


@dataclass(frozen=True)
class DNSConfig:
    # "ip" or "ip:port" ("[v6]:port" for IPv6); None means the first nameserver of /etc/resolv.conf.
    resolver: str | None = None
    timeout: float = 4.0
    # After the first reply, keep listening this long: an on-path injector's forged reply arrives
    # first and the resolver's real one shortly after; both are recorded.
    linger: float = 0.25
    query_types: tuple[str, ...] = ("A", "AAAA")
    source_address: str | None = None
    # CIDRs treated as routable when flagging bogon answers (labs living in 127.0.0.0/8).
    routable: tuple[str, ...] = ()


@dataclass(frozen=True)
class TCPConfig:
    timeout: float = 5.0
    source_address: str | None = None
    max_addresses: int = 4  # per URL, v4 and v6 together


@dataclass(frozen=True)
class TLSConfig:
    timeout: float = 6.0
    ca_file: str | None = None  # None: the system's roots
    alpn: tuple[str, ...] = ("http/1.1",)


@dataclass(frozen=True)
class HTTPConfig:
    timeout: float = 10.0
    body_cap: int = 1 << 20  # bytes kept per response; longer bodies are flagged truncated
    max_redirects: int = 5
    user_agent: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass(frozen=True)
class WebConfig:
    dns: DNSConfig = field(default_factory=DNSConfig)
    tcp: TCPConfig = field(default_factory=TCPConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)

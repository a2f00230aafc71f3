"""Collector addresses: the one typed model of "where and how the agent reaches its collector".

An address is a URL plus how to get there: directly, through a proxy (SOCKS5 with or without remote name
resolution, HTTP CONNECT), through Tor (SOCKS5h to a local Tor with a circuit of its own per upload), or
fronted (the TCP connection and the TLS name go to a CDN's ``front``, the ``Host`` header names the
collector). A volunteer lists several, in order: each collector call tries them in turn until one
answers, and each attempt's outcome is kept in an :class:`AttemptLog` that ``status`` shows.

Only the agent's collector calls (geolocate, control, test list, uploads) take these routes. The probes
open their own sockets and never use a proxy: a measurement made through one would measure the proxy's
network, not the volunteer's.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

from gatewatch.core.measurement import format_utc, utc_now

from .proxy import Route, is_onion, parse_proxy

__all__ = [
    "ATTEMPTS_KEY",
    "NO_PROXY",
    "Attempt",
    "AttemptLog",
    "CollectorAddress",
    "Fallbacks",
    "as_address",
    "as_addresses",
    "first_hops",
]

AddressKind = Literal["direct", "proxy", "tor", "onion", "fronted"]
NO_PROXY: Final = "direct"  # an address's ``proxy = "direct"``: never through the global proxy or Tor
ATTEMPTS_KEY: Final = "collector_attempts"  # the queue's meta key under which `status` finds them
_MAX_ATTEMPTS_KEPT = 20


class CollectorAddress(BaseModel):
    """One way to reach a collector. ``proxy`` is a proxy URL (``socks5h://``, ``socks5://``, ``http://``)
    or None for a direct connection; ``isolate`` (Tor mode) gives each upload its own SOCKS credentials,
    hence its own Tor circuit; ``front`` is the CDN name connected to and named in TLS instead of the URL's
    host (domain fronting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    proxy: str | None = None
    front: str | None = None
    isolate: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and value != NO_PROXY:
            parse_proxy(value)  # a ValueError with a sentence
        return value

    @field_validator("front")
    @classmethod
    def _front_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or ":" in value or " " in value):
            raise ValueError(f"front {value!r}: give a host name only (e.g. cdn.example.net)")
        return value

    def check_reachable(self) -> CollectorAddress:
        """This address, or a ValueError when its route cannot reach it (a .onion without Tor). Checked
        once the settings' proxy or Tor is applied (an address without its own proxy takes theirs)."""
        if is_onion(self.host) and not self.route.reaches(self.host):
            raise ValueError(
                f"{self.url}: a .onion address is reached only through Tor: set `tor = true` "
                "(or a socks5h:// proxy, which lets the proxy resolve the name)"
            )
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.url

    @property
    def route(self) -> Route:
        proxy = parse_proxy(self.proxy) if self.proxy and self.proxy != NO_PROXY else None
        return Route(proxy=proxy, front=self.front, isolate=self.isolate and proxy is not None)

    @property
    def proxied(self) -> bool:
        """True when the collector sees a proxy's address, not this machine's."""
        return self.route.proxy is not None

    @property
    def kind(self) -> AddressKind:
        if is_onion(self.host):
            return "onion"
        if self.front:
            return "fronted"
        if self.route.isolate:
            return "tor"
        return "proxy" if self.proxied else "direct"

    @property
    def first_hop(self) -> str:
        """The host this machine itself connects to (the proxy, the front or the collector): the only
        name the agent may resolve, and the address whose route tells the network the agent is on."""
        route = self.route
        if route.proxy is not None:
            return route.proxy.host
        return route.front or self.host

    @property
    def label(self) -> str:
        """``collector.example.org (tor via socks5h://127.0.0.1:9050)``: for status and logs, no secrets."""
        return f"{self.host} ({self.route.describe()})"

    def with_default_route(self, proxy: str | None, isolate: bool) -> CollectorAddress:
        """This address with the global proxy (or Tor) applied, unless it names its own."""
        if self.proxy is not None or proxy is None:
            return self
        return self.model_copy(update={"proxy": proxy, "isolate": isolate})


class Fallbacks:
    """Several addresses for one kind of call (the controls of a pass), tried in order, starting from the
    last one that answered: once the first address is found blocked, the pass's next controls do not wait
    for it again."""

    def __init__(self, addresses: Sequence[CollectorAddress]) -> None:
        if not addresses:
            raise ValueError("no collector address")
        self.addresses = list(addresses)
        self._good = 0

    def in_turn(self) -> list[CollectorAddress]:
        return self.addresses[self._good :] + self.addresses[: self._good]

    def answered(self, address: CollectorAddress) -> None:
        self._good = self.addresses.index(address)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fallbacks) and other.addresses == self.addresses

    __hash__ = None  # type: ignore[assignment]


def as_address(value: str | CollectorAddress) -> CollectorAddress:
    """A plain URL is a direct address (what the agent had before addresses were typed)."""
    return value if isinstance(value, CollectorAddress) else CollectorAddress(url=value)


def as_addresses(values: Iterable[str | CollectorAddress]) -> list[CollectorAddress]:
    return [as_address(value) for value in values]


@dataclass(frozen=True)
class Attempt:
    at: str
    call: str  # geolocate, test-list, control, upload
    address: str  # CollectorAddress.label
    kind: str
    outcome: str  # "ok" or the failure string

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AttemptLog:
    """The latest attempts to reach the collector, by address and call, in order (bounded)."""

    def __init__(self, limit: int = _MAX_ATTEMPTS_KEPT) -> None:
        self._attempts: collections.deque[Attempt] = collections.deque(maxlen=limit)

    def record(self, call: str, address: CollectorAddress, route: Route, outcome: str | None) -> None:
        """One attempt at ``address`` by ``route`` (the one taken); ``outcome`` None if it answered."""
        label = f"{address.host} ({route.describe()})"
        self._attempts.append(Attempt(format_utc(utc_now()), call, label, address.kind, outcome or "ok"))

    def __len__(self) -> int:
        return len(self._attempts)

    def as_records(self) -> list[dict[str, Any]]:
        return [attempt.as_dict() for attempt in self._attempts]


def first_hops(addresses: Sequence[CollectorAddress]) -> list[str]:
    """The hosts the agent connects to itself, as URLs (for :func:`locate.first_address`), those of
    addresses without a proxy first: the route toward them is the one the probes' traffic takes, while a
    local proxy or Tor is on loopback."""
    ordered = sorted(addresses, key=lambda address: address.proxied)  # stable: the list's order otherwise
    hops = [address.first_hop for address in ordered]
    return [f"http://[{hop}]/" if ":" in hop else f"http://{hop}/" for hop in hops]

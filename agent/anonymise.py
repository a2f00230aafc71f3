"""Scrub the volunteer from a measurement before it is stored or signed (pure: no I/O).

Two kinds of addresses are removed wherever they occur, in every string of the measurement's JSON
(headers, bodies, titles, DNS answers, failure strings, URLs, dict keys...):

* the agent's own public addresses (learned from the collector's geolocate answer, kept in memory only)
  and their reverse-DNS names become ``[scrubbed]``;
* addresses of the volunteer's LAN (a private resolver, the gateway, the machine's own private address)
  become the category ``private``: that the resolver is "a private address" is useful to researchers,
  *which* private address is not.

The walk is generic over the JSON structure, so a field added to the models later is covered without
touching this module. Addresses are found in every spelling :mod:`.spellings` knows: anything shaped
like an IPv4 address in a form inet_aton accepts (any radix, 1 to 4 parts, the dots escaped or replaced
by a separator) or like an IPv6 address (any case, padding, escaped colons) is parsed and compared, so
``0177.0101.0.012`` and ``2001:0DB8::1`` match while a longer address that merely contains ours
(``1.2.3.45``) does not; the address as one number (``0x7f41000a``, ``2134966282``), as base64 inside a
token, and our /64 without colons or as reversed nibbles are searched for as such. Censors' answers such
as ``10.10.34.35`` are evidence and are left alone: only the addresses given are replaced.

Scrubbing every spelling is a race that cannot be won alone: :mod:`.minimise` then keeps only what the
judgement needs (``docs/privacy.md``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gatewatch.core.measurement import Measurement

from . import spellings
from .spellings import V6_ANY, Tell

__all__ = [
    "PRIVATE",
    "SCRUBBED",
    "AnonymisationError",
    "Identity",
    "anonymise",
    "is_lan_address",
    "scrub_text",
]

SCRUBBED = "[scrubbed]"
PRIVATE = "private"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DIGIT = re.compile(r"\d")
# Something in a text that may separate the groups of an IPv6 address: else the IPv6 scan is skipped.
_V6_HINT = re.compile(r":|%3|%25|&#|&colon;|\\u003|-")
_NAME_PATTERN = r"(?<![A-Za-z0-9-])(?:%s)\.?(?![A-Za-z0-9-])"  # a whole host name, maybe with its root dot
_ALWAYS_SCAN = 1024  # characters
_REMEMBERED = 20_000  # short texts remembered with their scrubbed form
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: inside the ISP

# Hashes that cover content this module may rewrite. A hash of bytes that contained the volunteer's
# address would let anyone recover it by trying every address (2^32 for IPv4), so when the covered
# sibling changes the hash is recomputed over the scrubbed text (bodies) or dropped (DNS wire bytes).
_COVERED_BY = {"body_sha256": "body", "wire_sha256": "answers"}


class AnonymisationError(ValueError):
    """Scrubbing produced an invalid measurement (a bug: the measurement must not be kept)."""


def is_lan_address(address: str) -> bool:
    """True for addresses of a local network (private, link-local, CGNAT, ULA), not loopback.

    Loopback is not identifying (every machine has 127.0.0.1), and labs live there.
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return True
    return ip.is_private or ip.is_link_local


def _parse(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Identity:
    """What must not appear in a measurement. Lives in memory only; never serialised."""

    own_addresses: frozenset[IPAddress] = frozenset()
    own_names: frozenset[str] = frozenset()
    lan_addresses: frozenset[IPAddress] = frozenset()
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)  # our names
    _any_name: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    # Cheap evidence that a long text may hold one of our addresses in some spelling (see
    # spellings.Tell): the parts every spelling must contain (octets or the number in one radix or
    # another, hex groups without leading zeros, a name, a base64 core).
    _tells: tuple[Tell, ...] = field(default=(), compare=False, repr=False)
    # IPv6 privacy addresses rotate inside the /64 the network gave us: the whole /64 is ours.
    _own_v6_prefixes: frozenset[ipaddress.IPv6Network] = field(default=frozenset(), compare=False, repr=False)
    # Reverse-DNS-style host names spell our IPv4 address backwards ("7.113.0.203.dyn.isp.example").
    _own_reversed: frozenset[IPAddress] = field(default=frozenset(), compare=False, repr=False)
    # Each IPv4 address to find in any inet_aton spelling, as an integer, with what replaces it, and the
    # pattern that finds candidates (spellings.v4_pattern).
    _v4_targets: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    _v4_any: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    # The IPv4 addresses as one number (hex, decimal, octal): one pattern, and what each spelling becomes.
    _as_number: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _number_replacement: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    # Substrings (lower case) without one of which a text holds no name, no number spelling, no /64 form:
    # a few substring tests spare a regex scan of every text.
    _name_hints: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _v6_hints: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Base64 cores of the addresses' texts (one pattern, longest first), with what replaces each.
    _base64: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _base64_replacement: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    _base64_shortest: int = field(default=0, compare=False, repr=False)
    # Our /64s as 32 hex digits or reversed nibbles (one pattern).
    _v6_forms: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        own_addresses: Iterable[str] = (),
        own_names: Iterable[str] = (),
        lan_addresses: Iterable[str] = (),
    ) -> Identity:
        own = _with_embedded(ip for ip in map(_parse, own_addresses) if ip is not None)
        lan = _with_embedded(ip for ip in map(_parse, lan_addresses) if ip is not None) - own
        names = {n.strip().rstrip(".").lower() for n in own_names if n.strip().rstrip(".")}
        # Reverse-pointer names (4.3.2.1.in-addr.arpa, nibbles.ip6.arpa) are names of ours too.
        names |= {ip.reverse_pointer.lower() for ip in own}
        # One pattern per name, applied longest first, so that a name containing another, or overlapping
        # it, is replaced whole.
        ordered = sorted(names, key=lambda n: (-len(n), n))
        patterns = tuple(re.compile(_NAME_PATTERN % re.escape(name), re.IGNORECASE) for name in ordered)
        # One scan tells whether any name occurs at all (an alternation matches wherever one of its
        # alternatives would): most strings hold none, and then the patterns are not run one by one.
        any_name = (
            re.compile(_NAME_PATTERN % "|".join(map(re.escape, ordered)), re.IGNORECASE) if names else None
        )
        prefixes = frozenset(
            ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
            for ip in own
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None
        )
        reversed_own = frozenset(
            ipaddress.IPv4Address(bytes(reversed(ip.packed)))
            for ip in own
            if isinstance(ip, ipaddress.IPv4Address)
        )
        marked = [(ip, SCRUBBED) for ip in sorted(own | reversed_own, key=str)]
        marked += [(ip, PRIVATE) for ip in sorted(lan, key=str)]
        v4_marked = [(ip, mark) for ip, mark in marked if isinstance(ip, ipaddress.IPv4Address)]
        as_number, number_replacement = spellings.number_pattern(v4_marked)
        cores = {
            core: mark
            for ip, mark in reversed(marked)  # own last: it wins a core shared with a LAN address
            if ip in own or ip in lan  # not the reversed spellings: their text is not echoed
            for text in spellings.text_forms(ip)
            for core in spellings.base64_cores(text)
        }
        base64_pairs = tuple(sorted(cores.items(), key=lambda item: (-len(item[0]), item[0])))
        base64_pattern = re.compile("|".join(re.escape(core) for core, _ in base64_pairs)) if cores else None
        v6_patterns = [
            pattern
            for net in sorted(prefixes, key=str)
            for pattern in (spellings.v6_colon_free(net), spellings.v6_reversed_nibbles(net))
        ]
        v6_forms = re.compile("|".join(v6_patterns), re.IGNORECASE) if v6_patterns else None
        tells = _tells(names, own, lan, prefixes, base64_pairs)
        return cls(
            own_addresses=own,
            own_names=frozenset(names),
            lan_addresses=lan,
            _patterns=patterns,
            _any_name=any_name,
            _tells=tells,
            _own_v6_prefixes=prefixes,
            _own_reversed=reversed_own,
            _v4_targets=tuple((int(ip), mark) for ip, mark in v4_marked),
            _v4_any=spellings.v4_pattern(ip.packed[0] for ip, _ in v4_marked) if v4_marked else None,
            _as_number=as_number,
            _number_replacement=number_replacement,
            _name_hints=tuple(sorted(names)),
            _v6_hints=tuple(
                hint
                for net in sorted(prefixes, key=str)
                for head in [net.network_address.exploded.replace(":", "")[:16]]
                for hint in (head, ".".join(reversed(head)))
            ),
            _base64=base64_pattern,
            _base64_replacement=base64_pairs,
            _base64_shortest=min((len(core) for core in cores), default=0),
            _v6_forms=v6_forms,
        )

    def with_lan(self, addresses: Iterable[str]) -> Identity:
        added = {ip for ip in map(_parse, addresses) if ip is not None}
        if added <= self.lan_addresses | self.own_addresses:
            return self  # the usual case: the same home resolver in every measurement of a pass
        return Identity.of(
            [str(a) for a in self.own_addresses],
            [n for n in self.own_names if not n.endswith(".arpa")],
            [*map(str, self.lan_addresses), *addresses],
        )

    def replacement(self, ip: IPAddress) -> str | None:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                candidates.append(ip.ipv4_mapped)
            if ip in _NAT64:
                candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(c in self.own_addresses or c in self._own_reversed for c in candidates):
            return SCRUBBED
        if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in self._own_v6_prefixes):
            return SCRUBBED
        if any(c in self.lan_addresses for c in candidates):
            return PRIVATE
        return None

    @property
    def empty(self) -> bool:
        return not (self.own_addresses or self.lan_addresses or self._patterns)


def _with_embedded(addresses: Iterable[IPAddress]) -> frozenset[IPAddress]:
    """The addresses, plus the IPv4 address inside any v4-mapped one (both spellings are ours)."""
    found: set[IPAddress] = set()
    for ip in addresses:
        found.add(ip)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            found.add(ip.ipv4_mapped)
    return frozenset(found)


def _tells(
    names: set[str],
    own: frozenset[IPAddress],
    lan: frozenset[IPAddress],
    prefixes: frozenset[ipaddress.IPv6Network],
    base64_pairs: tuple[tuple[str, str], ...],
) -> tuple[Tell, ...]:
    found: set[Tell] = {(frozenset({name}),) for name in names}
    for ip in own | lan:
        found.add(tuple(frozenset({part}) for part in _tell(ip)))
        if isinstance(ip, ipaddress.IPv4Address):
            found.update(spellings.v4_tells(ip))
            # Also spelled as two hex groups (NAT64 "64:ff9b::cb00:7107", v4-mapped "::ffff:cb00:7107").
            found.add(tuple(frozenset({part}) for part in _hex_tell(ip)))
    for net in prefixes:
        head = net.network_address.exploded.replace(":", "")[:16]
        found.add((frozenset({".".join(reversed(head))}),))  # reversed nibbles
    if base64_pairs:
        found.add((frozenset(core.lower() for core, _ in base64_pairs),))
    return tuple(sorted(found, key=lambda tell: sorted(map(sorted, tell))))


def _tell(ip: IPAddress) -> tuple[str, ...]:
    """Substrings every spelling of ``ip`` contains, in lower case: each IPv4 octet's digits (zero padding
    only adds zeros in front), or for IPv6 the /64's non-zero hex groups without leading zeros (so any
    address in our /64, however written, still shows them)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return tuple(str(octet) for octet in ip.packed)
    groups = [f"{int(g, 16):x}" for g in ip.exploded.split(":")[:4]]
    return tuple(g for g in groups if g != "0") or ("::",)


def _hex_tell(ip: ipaddress.IPv4Address) -> tuple[str, ...]:
    """The hex groups of ``ip`` written inside an IPv6 address, without leading zeros, in lower case."""
    return tuple(g for g in (f"{int(ip) >> 16:x}", f"{int(ip) & 0xFFFF:x}") if g != "0") or ("::",)


def scrub_text(text: str, identity: Identity) -> str:
    """``text`` with every occurrence of the identity's names and addresses replaced."""
    return _scrubber(identity).text(text) if not identity.empty else text


@functools.lru_cache(maxsize=4)
def _scrubber(identity: Identity) -> _Scrubber:
    """The scrubber of an identity, kept across the measurements of a pass (one identity, or a few)."""
    return _Scrubber(identity)


class _Scrubber:
    """Scrubs the strings of measurements. The same short strings (keys, header names, failure strings,
    the resolver's address) come back many times in a measurement and in every measurement of a pass, so
    each is scanned once (up to :data:`_REMEMBERED` of them)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.seen: dict[str, str] = {}
        self.numbers = dict(identity._number_replacement)
        self.base64 = dict(identity._base64_replacement)
        # Every inet_aton form starts with the first octet: most numbers found are not ours from it.
        self.first_octets = frozenset(value >> 24 for value, _ in identity._v4_targets)

    def text(self, text: str) -> str:
        identity = self.identity
        if len(text) > _ALWAYS_SCAN:
            # Scanning every byte of long texts (bodies) for address shapes costs milliseconds each; a
            # long text is scanned only when, for some spelling of one of our addresses or names, it
            # holds every part that spelling must contain (a few substring tests).
            lowered = text.lower()
            if not any(
                all(any(alt in lowered for alt in group) for group in tell) for tell in identity._tells
            ):
                return text
        else:
            # Short texts (headers, DNS answers, failures, URLs) are always scanned, once each.
            done = self.seen.get(text)
            if done is not None:
                return done
        original = text
        lowered = text.lower()
        # Base64 first: the other spellings could cut through a token.
        if identity._base64 is not None and len(text) >= identity._base64_shortest:
            text = identity._base64.sub(self._base64, text)
        if identity._any_name is not None and any(hint in lowered for hint in identity._name_hints):
            for pattern in identity._patterns:
                text = pattern.sub(SCRUBBED, text)
        if identity._v6_forms is not None and any(hint in lowered for hint in identity._v6_hints):
            text = identity._v6_forms.sub(SCRUBBED, text)
        # Not behind the digit test: a hex spelling may have no digit ("fffffffa").
        if identity._as_number is not None and any(form in lowered for form in self.numbers):
            text = identity._as_number.sub(self._number, text)
        if _DIGIT.search(text):
            if identity._v4_any is not None:
                text = identity._v4_any.sub(self._v4, text)
        if _V6_HINT.search(text):
            text = V6_ANY.sub(self._v6, text)
        if len(original) <= _ALWAYS_SCAN:
            if len(self.seen) >= _REMEMBERED:
                self.seen.clear()  # bounded memory on a long pass
            self.seen[original] = text
        return text

    def _base64(self, match: re.Match[str]) -> str:
        return self.base64[match.group(0)]

    def _number(self, match: re.Match[str]) -> str:
        token = match.group(0)
        digits = token[2:] if token[:2].lower() == "0x" else token
        return self.numbers.get(digits.lower(), token)

    def _v4(self, match: re.Match[str]) -> str:
        if self.first_octets.isdisjoint(spellings.part_values(match.group("a"))):
            return match.group(0)
        if spellings.inside_longer_run(match):
            return match.group(0)
        for value, mark in self.identity._v4_targets:
            if spellings.matches_v4(match, value):
                return mark
        return match.group(0)

    def _v6(self, match: re.Match[str]) -> str:
        token = match.group(0)
        ip = _parse(spellings.v6_normalised(token))
        return (self.identity.replacement(ip) if ip else None) or token

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string (dict keys included) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            out = {self.text(k): self.value(v) for k, v in value.items()}
            # The reply's bytes may hold our address in records that are not parsed (TXT, say), and a
            # hash of them could be reversed by trying every IPv4 address: never keep it.
            if out.get("wire_sha256") is not None:
                out["wire_sha256"] = None
            for hash_key, covered in _COVERED_BY.items():
                if isinstance(out.get(hash_key), str) and out.get(covered) != value.get(covered):
                    body = out[covered]
                    out[hash_key] = (
                        hashlib.sha256(body.encode()).hexdigest() if isinstance(body, str) else None
                    )
            return out
        return value


def _lan_resolvers(data: dict[str, Any]) -> list[str]:
    """Resolver addresses in the DNS queries that belong to the volunteer's LAN (e.g. the home router)."""
    found = []
    for query in data.get("test_keys", {}).get("queries", []):
        host = _host_of(str(query.get("resolver_address", "")))
        if is_lan_address(host):
            found.append(host)
    return found


def _host_of(address: str) -> str:
    """The address part of "ip", "ip:port", "[v6]:port" or a bare v6 address."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def anonymise(measurement: Measurement, identity: Identity) -> Measurement:
    """A copy of ``measurement`` with the volunteer scrubbed out; still a valid :class:`Measurement`."""
    data = measurement.model_dump(mode="json")
    identity = identity.with_lan(_lan_resolvers(data))
    scrubbed = _scrubber(identity).value(data) if not identity.empty else data
    try:
        return Measurement.model_validate(scrubbed)
    except ValueError as exc:
        raise AnonymisationError(f"scrubbing left an invalid measurement: {exc}") from exc

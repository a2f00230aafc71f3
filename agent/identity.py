"""Who the volunteer is, as the scrubber needs it (pure; lives in memory only, never serialised).

:class:`Identity` holds the volunteer's own addresses and names and the LAN's addresses, and precomputes
from them what :mod:`.anonymise` searches every text for: the patterns of each spelling
(:mod:`.spellings`) and the cheap tells that let a long text be skipped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from gatewatch.core.bogons import embedded_v4

from . import spellings
from .spellings import Tell

__all__ = ["PRIVATE", "SCRUBBED", "IPAddress", "Identity", "parse_address"]

SCRUBBED = "[scrubbed]"
PRIVATE = "private"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAME_PATTERN = r"(?<![A-Za-z0-9-])(?:%s)\.?(?![A-Za-z0-9-])"  # a whole host name, maybe with its root dot


def parse_address(text: str) -> IPAddress | None:
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
        own = _with_embedded(ip for ip in map(parse_address, own_addresses) if ip is not None)
        lan = _with_embedded(ip for ip in map(parse_address, lan_addresses) if ip is not None) - own
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
        tells = _tells(names, own, lan, prefixes, base64_pairs, reversed_own)
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
        added = {ip for ip in map(parse_address, addresses) if ip is not None}
        if added <= self.lan_addresses | self.own_addresses:
            return self  # the usual case: the same home resolver in every measurement of a pass
        return Identity.of(
            [str(a) for a in self.own_addresses],
            [n for n in self.own_names if not n.endswith(".arpa")],
            [*map(str, self.lan_addresses), *addresses],
        )

    def replacement(self, ip: IPAddress) -> str | None:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_v4(ip)) is not None:
            candidates.append(inner)  # v4-mapped, 6to4, Teredo, NAT64, IPv4-compatible: our IPv4 inside
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
    """The addresses, plus the IPv4 address inside any IPv6 form that carries one (v4-mapped, 6to4, Teredo,
    NAT64: the IPv4 address is ours too)."""
    found: set[IPAddress] = set()
    for ip in addresses:
        found.add(ip)
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_v4(ip)) is not None:
            found.add(inner)
    return frozenset(found)


def _tells(
    names: set[str],
    own: frozenset[IPAddress],
    lan: frozenset[IPAddress],
    prefixes: frozenset[ipaddress.IPv6Network],
    base64_pairs: tuple[tuple[str, str], ...],
    reversed_own: frozenset[IPAddress] = frozenset(),
) -> tuple[Tell, ...]:
    found: set[Tell] = {(frozenset({name}),) for name in names}
    # Our IPv4 address backwards is scrubbed in every inet_aton form too ("7.7405771" is 7.113.0.203
    # in two parts): its 3- and 2-part forms and its number share no tell with the address forwards.
    for ip in reversed_own:
        if isinstance(ip, ipaddress.IPv4Address):
            found.update(spellings.v4_tells(ip))
            found.add(tuple(frozenset({part}) for part in _hex_tell(ip)))
            found.add(tuple(frozenset({part}) for part in _hex_tell(teredo_obfuscated(ip))))
    for ip in own | lan:
        found.add(tuple(frozenset({part}) for part in _tell(ip)))
        if isinstance(ip, ipaddress.IPv4Address):
            found.update(spellings.v4_tells(ip))
            # Also spelled as two hex groups (NAT64 "64:ff9b::cb00:7107", v4-mapped "::ffff:cb00:7107").
            found.add(tuple(frozenset({part}) for part in _hex_tell(ip)))
            # Teredo's client address: the same two groups, every bit flipped (RFC 4380 §4).
            found.add(tuple(frozenset({part}) for part in _hex_tell(teredo_obfuscated(ip))))
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


def teredo_obfuscated(ip: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    """``ip`` as a Teredo address's last two groups carry it: every bit flipped (RFC 4380 §4)."""
    return ipaddress.IPv4Address(int(ip) ^ 0xFFFFFFFF)


def _hex_tell(ip: ipaddress.IPv4Address) -> tuple[str, ...]:
    """The hex groups of ``ip`` written inside an IPv6 address, without leading zeros, in lower case."""
    return tuple(g for g in (f"{int(ip) >> 16:x}", f"{int(ip) & 0xFFFF:x}") if g != "0") or ("::",)

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
from typing import Any

from gatewatch.core.measurement import Measurement

from . import spellings
from .identity import PRIVATE, SCRUBBED, Identity, parse_address, teredo_obfuscated
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

_DIGIT = re.compile(r"\d")
# Something in a text that may separate the groups of an IPv6 address: else the IPv6 scan is skipped.
_V6_HINT = re.compile(r":|%3|%25|&#|&colon;|\\u003|-")
_ALWAYS_SCAN = 1024  # characters
_REMEMBERED = 20_000  # short texts remembered with their scrubbed form
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: inside the ISP

# Hashes that cover content this module may rewrite. A hash of bytes that contained the volunteer's
# address would let anyone recover it by trying every address (2^32 for IPv4), so when the covered
# sibling changes the hash is recomputed over the scrubbed text (bodies) or dropped (DNS wire bytes).
_WIRE_HASH = "wire_sha256"
_COVERED_BY = {"body_sha256": "body", _WIRE_HASH: "answers"}


class AnonymisationError(ValueError):
    """Scrubbing produced an invalid measurement (a bug: the measurement must not be kept)."""


@functools.lru_cache(maxsize=256)
def is_lan_address(address: str) -> bool:
    """True for addresses of a local network (private, link-local, CGNAT, ULA), not loopback.

    Loopback is not identifying (every machine has 127.0.0.1), and labs live there. Remembered: every
    measurement of a pass asks it of the same resolver address, and the answer is a function of the text.
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
        # A plain dotted quad ("127.80.0.23", the usual spelling) is one number: looked up, not compared
        # with each target in every inet_aton reading. The first target of a value wins, as in the loop.
        self.plain_v4: dict[int, str] = {}
        for value, mark in identity._v4_targets:
            self.plain_v4.setdefault(value, mark)
        self.screen = _screen(identity._tells)
        self.v6_groups = _v6_groups(identity)
        # Of the walk in progress (see value): whether a string was rewritten, how many hashes dropped.
        self.changed = False
        self.hashes_cleared = 0

    def text(self, text: str) -> str:
        identity = self.identity
        if len(text) > _ALWAYS_SCAN:
            # Scanning every byte of long texts (bodies) for address shapes costs milliseconds each; a
            # long text is scanned only when, for some spelling of one of our addresses or names, it
            # holds every part that spelling must contain (a few substring tests).
            lowered = text.lower()
            if not _screened(lowered, self.screen) or not _told(lowered, identity._tells):
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
        if _V6_HINT.search(text) and (
            self.v6_groups is None or any(all(g in lowered for g in groups) for groups in self.v6_groups)
        ):
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
        value = spellings.plain_quad(match)
        if value is not None:
            mark = self.plain_v4.get(value)
            if mark is None or spellings.inside_longer_run(match):
                return match.group(0)
            return mark
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
        normalised = spellings.v6_normalised(token)
        if "::" not in normalised and normalised.count(":") != 7:
            return token  # eight groups or a "::", else no IPv6 address (dates, UUIDs): no parse to fail
        ip = parse_address(normalised)
        return (self.identity.replacement(ip) if ip else None) or token

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string (dict keys included) scrubbed. ``changed`` is set
        when a string was rewritten, ``hashes_cleared`` counts the wire hashes dropped."""
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is dict:
            return self._object(value)
        if kind is list:
            return [self.value(item) for item in value]
        if isinstance(value, str):  # a str subclass (the JSON dump gives plain ones): same as text
            return self._string(value)
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return self._object(value)
        return value

    def hashes_if_unchanged(self, value: dict[str, Any]) -> int | None:
        """How many wire hashes the walk (:meth:`value`) would drop from ``value``, or None if it would
        rewrite a string (or meets a value it does not know). The same strings as the walk are scanned
        (and remembered), but no copy is built: most measurements hold nothing of ours, and then the walk's
        copy is thrown away."""
        seen, text = self.seen, self.text
        hashes = 0
        pending: list[Any] = [value]
        while pending:  # bounded: each node of the (finite, acyclic) JSON value is visited once
            node = pending.pop()
            if type(node) is dict:
                pairs = node.items()
            else:
                pairs = ((None, item) for item in node)  # a list: its items, under no key
            for key, item in pairs:
                if key is not None:
                    new_key = seen.get(key) or text(key)
                    if new_key is not key and new_key != key:
                        return None
                kind = type(item)
                if kind is str:
                    if key == _WIRE_HASH:
                        hashes += 1  # dropped by the walk, whatever it says
                        continue
                    new = seen.get(item) or text(item)
                    if new is not item and new != item:
                        return None
                elif kind is dict or kind is list:
                    pending.append(item)
                elif item is not None and kind not in _SCALARS:
                    return None  # not what a JSON dump gives: the walk decides
        return hashes

    def _string(self, value: str) -> str:
        new = self.seen.get(value) or self.text(value)  # only short texts are remembered
        if new is not value and new != value:
            self.changed = True
        return new

    def _object(self, value: dict[str, Any]) -> dict[str, Any]:
        # The walk's hot loop (a measurement has hundreds of keys and short strings, most of them seen
        # before): remembered texts are looked up here, without a call per string. A text nothing was
        # replaced in comes back as the same object (re.sub returns its input when nothing matched).
        seen, text, walk = self.seen, self.text, self.value
        out: dict[str, Any] = {}
        for key, item in value.items():
            new_key = seen.get(key) or text(key)
            if new_key is not key and new_key != key:
                self.changed = True
            if type(item) is str:
                if new_key == _WIRE_HASH:
                    out[new_key] = item  # dropped below whatever it says: not worth scanning
                    continue
                new_item = seen.get(item) or text(item)
                if new_item is not item and new_item != item:
                    self.changed = True
                out[new_key] = new_item
            elif item is None or type(item) in _SCALARS:
                out[new_key] = item
            else:
                out[new_key] = walk(item)
        # The reply's bytes may hold our address in records that are not parsed (TXT, say), and a
        # hash of them could be reversed by trying every IPv4 address: never keep it.
        if out.get(_WIRE_HASH) is not None:
            out[_WIRE_HASH] = None
            self.hashes_cleared += 1
        for hash_key, covered in _COVERED_BY.items():
            if hash_key in out and isinstance(out[hash_key], str) and out.get(covered) != value.get(covered):
                body = out[covered]
                out[hash_key] = hashlib.sha256(body.encode()).hexdigest() if isinstance(body, str) else None
        return out


_SCALARS = frozenset({int, float, bool})


def _v6_groups(identity: Identity) -> tuple[tuple[str, ...], ...] | None:
    """Without an IPv6 address of ours, an IPv6 token is ours only as a form carrying one of our IPv4
    addresses (Identity.replacement: v4-mapped, NAT64, IPv4-compatible, 6to4, Teredo): two of its groups then
    spell that address (Teredo's with every bit flipped), and their hex digits (zeros in front aside, any
    case) are in the text. These groups, lower case, of each IPv4 address and of its Teredo form; None
    (always scan) with an IPv6 address of ours, or an IPv4 one with no non-zero group."""
    if any(ip.version == 6 for ip in (*identity.own_addresses, *identity.lan_addresses)):
        return None
    if identity._own_v6_prefixes:
        return None
    found = []
    for value, _ in identity._v4_targets:
        for carried in (value, int(teredo_obfuscated(ipaddress.IPv4Address(value)))):  # Teredo flips bits
            groups = tuple(g for g in (f"{carried >> 16:x}", f"{carried & 0xFFFF:x}") if g != "0")
            if not groups:
                return None
            found.append(groups)
    return tuple(found)


def _screen(tells: tuple[Tell, ...]) -> tuple[str, ...] | None:
    """The alternatives of one group of each tell that hold no shorter one: a text in which none occurs
    holds no tell (each tell needs one alternative of every group, and each of those contains one of
    these), so most long texts are cleared with these few tests instead of every tell's. Of each tell, the
    group least likely to be in a text (about 10^-n for n characters): a one-character alternative ("a",
    the hex of 10) is in almost every text and would clear none. None when a tell has no group (it is in
    every text)."""
    if any(not tell for tell in tells):
        return None
    firsts = {
        alternative
        for tell in tells
        for alternative in min(tell, key=lambda group: sum(10.0 ** -len(a) for a in group))
    }
    return tuple(sorted(a for a in firsts if not any(b != a and b in a for b in firsts)))


def _screened(lowered: str, screen: tuple[str, ...] | None) -> bool:
    """False when ``lowered`` cannot hold a tell (see :func:`_screen`); True when it may."""
    if screen is None:
        return True
    for alternative in screen:
        if alternative in lowered:
            return True
    return False


def _told(lowered: str, tells: tuple[Tell, ...]) -> bool:
    """Whether ``lowered`` holds, for some tell, one alternative of each of its groups (see
    :class:`~.spellings.Tell`): plain loops, as this runs on every long text of every measurement."""
    for tell in tells:
        for group in tell:
            for alternative in group:
                if alternative in lowered:
                    break
            else:
                break  # this group has no alternative in the text: this tell is not there
        else:
            return True
    return False


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
    """A copy of ``measurement`` with the volunteer scrubbed out; still a valid :class:`Measurement`.

    Most measurements hold nothing of the volunteer's: when the walk would rewrite no string (checked
    without building its copy), the result is the measurement as built (already valid) without its DNS
    wire hashes, and is not validated again."""
    data = measurement.model_dump(mode="json")
    identity = identity.with_lan(_lan_resolvers(data))
    if identity.empty:
        return measurement
    scrubber = _scrubber(identity)
    hashes = scrubber.hashes_if_unchanged(data)
    if hashes is not None:
        unchanged, cleared = _without_wire_hashes(measurement)
        if cleared == hashes:
            return unchanged
    scrubber.changed, scrubber.hashes_cleared = False, 0
    scrubbed = scrubber.value(data)
    try:
        return Measurement.model_validate(scrubbed)
    except ValueError as exc:
        raise AnonymisationError(f"scrubbing left an invalid measurement: {exc}") from exc


def _without_wire_hashes(measurement: Measurement) -> tuple[Measurement, int]:
    """``measurement`` with its DNS replies' wire hashes dropped, and how many were (the caller compares
    that with what the walk dropped: a hash anywhere else sends it down the generic path)."""
    keys = measurement.test_keys
    cleared = 0
    queries = []
    for query in keys.queries:
        if any(reply.wire_sha256 is not None for reply in query.replies):
            replies = [
                reply.model_copy(update={"wire_sha256": None}) if reply.wire_sha256 is not None else reply
                for reply in query.replies
            ]
            cleared += sum(reply.wire_sha256 is not None for reply in query.replies)
            query = query.model_copy(update={"replies": replies})
        queries.append(query)
    if not cleared:
        return measurement.model_copy(), 0
    return measurement.model_copy(update={"test_keys": keys.model_copy(update={"queries": queries})}), cleared

"""The spellings an address takes when a server echoes it back (pure: no I/O): what :mod:`.anonymise`
looks for, and the cheap evidence (*tells*) that a long text may hold one.

An IPv4 address is found in any form ``inet_aton`` accepts (1 to 4 parts, each decimal, ``0``-octal or
``0x``-hex: ``0177.0101.0.012``, ``0x7f.65.0.10``, ``127.65.10``, ``2134966282``, ``0x7f41000a``) and
with its dots spelled otherwise (``%2E``, ``%252E``, ``&#46;``, ``&#x2e;``, ``&period;``, JSON
``\\u002e``, full-width ``．``), or its four parts joined by a space, comma, underscore, colon or dash; an
IPv6 address with its colons spelled ``%3A``, ``&#58;``, ``&colon;``, ``\\u003a`` or ``-``, as 32 hex
digits without colons, or as reversed nibbles with or without ``ip6.arpa``; either as the base64 of its
text, at any alignment inside a longer encoded string (a cookie, a token).

Base64 at any alignment: the address text starts 0, 1 or 2 bytes into a 3-byte group of the encoded
string, so it is encoded three times, each behind that many filler bytes; the characters that depend
on the address's bytes alone (the *core* of each alignment) appear in any base64 text that encodes it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "DOT_SEPARATORS",
    "V4_ANY",
    "V6_ANY",
    "Tell",
    "base64_cores",
    "inside_longer_run",
    "int_spellings",
    "matches_v4",
    "number_pattern",
    "part_values",
    "plain_quad",
    "text_forms",
    "v4_pattern",
    "v4_tells",
    "v6_colon_free",
    "v6_normalised",
    "v6_reversed_nibbles",
]

# A tell: every group must have one of its alternatives in the (lower-cased) text.
Tell = tuple[frozenset[str], ...]

# Separators that inet_aton's dot may take in a text; the first is the dot itself.
DOT_SEPARATORS: Final = (
    r"\.",
    "%2[eE]",
    "%252[eE]",
    "&#0*46;",
    "&#[xX]0*2[eE];",
    "&period;",
    r"\\u002[eE]",
    "\uff0e",  # full-width full stop
    "\u3002",  # ideographic full stop
)
# Only a four-part address is recognised with these (they also join ordinary numbers: "12:30", "1, 2").
_OTHER_SEPARATORS: Final = (", ", ",", " ", "_", ":", "-")
_SEP = "(?:" + "|".join((*DOT_SEPARATORS, *_OTHER_SEPARATORS)) + ")"
_DOT_LIKE = re.compile("^(?:" + "|".join(DOT_SEPARATORS) + ")$")
_PART = r"(?:0[xX][0-9A-Fa-f]{1,8}|\d{1,10})"
_V4_TEMPLATE = (
    r"(?<![0-9])(?P<a>{first})(?P<s>{sep})(?P<b>{part})"
    r"(?:(?P=s)(?P<c>{part}))?(?:(?P=s)(?P<d>{part}))?(?![0-9])"
)
# Two to four parts joined by the same separator (in any case: "&#x2e;" then "&#x2E;"), not inside a
# longer number.
V4_ANY: Final = re.compile(_V4_TEMPLATE.format(first=_PART, sep=_SEP, part=_PART), re.IGNORECASE)


def v4_pattern(first_octets: Iterable[int]) -> re.Pattern[str]:
    """:data:`V4_ANY` narrowed to addresses whose first octet is one of ``first_octets`` (in any of its
    spellings): a page full of numbers then costs the regex engine, not a Python call per number."""
    octets = set(first_octets)
    firsts = sorted(
        {rf"0*{octet}" for octet in octets}
        | {rf"0+{octet:o}" for octet in octets}
        | {rf"0x0*{octet:x}" for octet in octets},
        key=lambda spelled: (-len(spelled), spelled),
    )
    first = "(?:" + "|".join(firsts) + ")"
    return re.compile(_V4_TEMPLATE.format(first=first, sep=_SEP, part=_PART), re.IGNORECASE)


_HEX = "[0-9A-Fa-f]"
_V6_SEP = r"(?::|%3[Aa]|%253[Aa]|&#0*58;|&#[xX]0*3[Aa];|&colon;|\\u003[Aa]|-)"
V6_ANY: Final = re.compile(
    rf"(?<![0-9A-Fa-f:%])(?:{_HEX}{{0,4}}{_V6_SEP}){{2,7}}{_HEX}{{0,4}}(?![0-9A-Fa-f])"
)
_V6_SEP_RE = re.compile(_V6_SEP)


def v6_normalised(token: str) -> str:
    """An IPv6 token with every spelling of its colons made a colon."""
    return _V6_SEP_RE.sub(":", token)


def part_values(part: str) -> frozenset[int]:
    """The numbers one part of a dotted address may mean: decimal (zero-padded included), and octal when
    it has a leading zero (as inet_aton reads it), or hex with ``0x``."""
    if part[:2].lower() == "0x":
        return frozenset({int(part[2:], 16)})
    values = {int(part)}
    if len(part) > 1 and part[0] == "0" and all(c in "01234567" for c in part):
        values.add(int(part, 8))
    return frozenset(values)


def _split(value: int, parts: int) -> tuple[int, ...]:
    """``value`` (an IPv4 address as an integer) as inet_aton's ``parts``-part form."""
    octets = value.to_bytes(4, "big")
    leading = tuple(octets[: parts - 1])
    rest_bits = 8 * (4 - (parts - 1))
    return (*leading, value & ((1 << rest_bits) - 1))


def matches_v4(match: re.Match[str], value: int) -> bool:
    """Whether ``match`` of :data:`V4_ANY` spells the IPv4 address ``value``."""
    parts = [p for p in match.group("a", "b", "c", "d") if p is not None]
    if len(parts) < 4 and not _DOT_LIKE.match(match.group("s")):
        return False
    return all(want in part_values(p) for want, p in zip(_split(value, len(parts)), parts, strict=True))


def plain_quad(match: re.Match[str]) -> int | None:
    """The address a match of :data:`V4_ANY` spells when it is four decimal octets joined by dots, with no
    leading zero (the one reading :func:`matches_v4` gives it then); None for any other spelling."""
    if match.group("s") != ".":
        return None
    value = 0
    for part in match.group("a", "b", "c", "d"):
        if part is None or not part.isdecimal() or len(part) > 3 or (part[0] == "0" and len(part) > 1):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def inside_longer_run(match: re.Match[str]) -> bool:
    """True when the match continues a longer run of numbers with the same separator (``9.1.2.3.4``): then
    it is part of something else (a version, a longer address), not an address of its own."""
    text, sep = match.string, match.group("s")
    start, end, width = match.start(), match.end(), len(sep) + 1
    before = text[max(0, start - width) : start]  # a window: slicing a whole page per match is quadratic
    after = text[end : end + width]
    if before[1:].lower() == sep.lower() and before[:1].isdigit():
        return True
    return after[:-1].lower() == sep.lower() and after[-1:].isdigit()


def int_spellings(ip: ipaddress.IPv4Address) -> tuple[set[str], set[str]]:
    """The address as one number: (hex spellings, decimal and octal spellings), in lower case."""
    value = int(ip)
    return {f"{value:x}", f"{value:08x}"}, {str(value), f"0{value:o}"}


def number_pattern(
    marked: Sequence[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]],
) -> tuple[re.Pattern[str] | None, tuple[tuple[str, str], ...]]:
    """One pattern for the IPv4 addresses written as one number, and what each spelling becomes."""
    hexes: dict[str, str] = {}
    numbers: dict[str, str] = {}
    for ip, mark in reversed(marked):  # the first mark wins (own before LAN)
        if isinstance(ip, ipaddress.IPv4Address) and int(ip) >= 1 << 24:  # shorter ones are ordinary numbers
            hex_forms, number_forms = int_spellings(ip)
            hexes.update(dict.fromkeys(hex_forms, mark))
            numbers.update(dict.fromkeys(number_forms, mark))
    if not hexes:
        return None, ()
    by_length = lambda forms: "|".join(sorted(forms, key=lambda f: (-len(f), f)))  # noqa: E731
    pattern = re.compile(
        rf"(?<![0-9A-Fa-f])(?:0x)?(?:{by_length(hexes)})(?![0-9A-Fa-f])|(?<!\d)(?:{by_length(numbers)})(?!\d)",
        re.IGNORECASE,
    )
    return pattern, tuple({**numbers, **hexes}.items())


def _forms(value: int) -> frozenset[str]:
    """How one part may be written (lower case), without prefixes or padding."""
    return frozenset({str(value), f"{value:o}", f"{value:x}"})


def v4_tells(ip: ipaddress.IPv4Address) -> list[Tell]:
    """Tells for every spelling of an IPv4 address: one group per part of each inet_aton form (4, 3, 2
    parts), and the address as one number."""
    value = int(ip)
    tells: list[Tell] = [tuple(_forms(v) for v in _split(value, parts)) for parts in (4, 3, 2)]
    hexes, numbers = int_spellings(ip)
    tells.append((frozenset(hexes | numbers),))
    return tells


def base64_cores(text: str) -> frozenset[str]:
    """The base64 characters that encode ``text`` alone, for each of the 3 alignments it may have inside a
    longer encoded string, in the standard and the URL-safe alphabet."""
    data = text.encode()
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data + b"\0\0").decode()
        # Character i carries bits [6i, 6i+6) of the stream; keep those inside the text's bits.
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(data)) // 6
        core = encoded[start:end]
        cores.add(core)
        cores.add(core.translate(str.maketrans("+/", "-_")))
    return frozenset(cores)


def v6_colon_free(prefix: ipaddress.IPv6Network) -> str:
    """A pattern for any address of the /64 ``prefix`` written as 32 hex digits without colons."""
    head = prefix.network_address.exploded.replace(":", "")[:16]
    return rf"(?<![0-9A-Fa-f]){head}[0-9A-Fa-f]{{16}}(?![0-9A-Fa-f])"


def v6_reversed_nibbles(prefix: ipaddress.IPv6Network) -> str:
    """A pattern for any address of the /64 ``prefix`` as reversed nibbles, dotted, with or without the
    ``ip6.arpa`` suffix."""
    head = prefix.network_address.exploded.replace(":", "")[:16]
    reversed_head = r"\.".join(reversed(head))
    return rf"(?<![0-9A-Za-z.])(?:[0-9A-Fa-f]\.){{16}}{reversed_head}(?:\.ip6\.arpa\.?)?(?![0-9A-Za-z])"


def text_forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Iterable[str]:
    """The usual texts of an address, whose base64 is looked for."""
    yield str(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        yield ip.exploded

"""The echo site's spelling pages: the client's own address in every spelling a careless or hostile server
might use, for privacy tests (``/spellings`` on a site with the ``echo_client`` behaviour).

``GET /spellings`` answers a redirect whose ``Location`` carries the address with percent-encoded dots, so
the probe's next request URL carries it too; the page it lands on repeats the address in each spelling
of :func:`address_spellings` in its body, its title, response headers and a ``Set-Cookie`` holding a
base64 token. Written apart from the agent's scrubber (``agent/spellings.py``) on purpose: a test that
uses the scrubber's own list to check the scrubber proves nothing.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
from urllib.parse import quote

__all__ = [
    "SPELLINGS_PATH",
    "address_spellings",
    "is_landing",
    "is_spellings_target",
    "spellings_page",
    "spellings_redirect",
]

SPELLINGS_PATH = "/spellings"
_SEEN_PATH = "/spellings/seen"


def _dotted(parts: list[str], separator: str) -> str:
    return separator.join(parts)


def address_spellings(address: str) -> dict[str, str]:
    """Name -> the client's address spelled that way (IPv4: every form; IPv6: its own forms)."""
    ip = ipaddress.ip_address(address)
    text = str(ip)
    token = json.dumps({"sub": "visitor", "ip": text, "n": 1}, separators=(",", ":")).encode()
    forms: dict[str, str] = {
        "plain": text,
        "base64_token": base64.b64encode(token).decode(),
        "base64_token_shifted": base64.urlsafe_b64encode(b"x" + token).decode().rstrip("="),
        "base64_token_shifted_twice": base64.b64encode(b"xy" + token).decode(),
    }
    if isinstance(ip, ipaddress.IPv4Address):
        octets = list(ip.packed)
        parts = [str(o) for o in octets]
        value = int(ip)
        forms |= {
            "hex_0x": f"0x{value:08x}",
            "hex_bare_upper": f"{value:08X}",
            "decimal_integer": str(value),
            "octal_dotted": ".".join(f"0{o:o}" if o else "0" for o in octets),
            "hex_dotted": ".".join(f"0x{o:x}" for o in octets),
            "mixed_radix": f"0x{octets[0]:x}.{octets[1]}.0{octets[2]:o}.{octets[3]}",
            "three_parts": f"{octets[0]}.{octets[1]}.{(octets[2] << 8) | octets[3]}",
            "two_parts": f"{octets[0]}.{value & 0xFFFFFF}",
            "percent_dots": _dotted(parts, "%2E"),
            "entity_decimal": _dotted(parts, "&#46;"),
            "entity_hex": _dotted(parts, "&#x2e;"),
            "entity_named": _dotted(parts, "&period;"),
            "json_escape": _dotted(parts, "\\u002e"),
            "spaces": _dotted(parts, " "),
            "commas": _dotted(parts, ","),
            "underscores": _dotted(parts, "_"),
            "colons": _dotted(parts, ":"),
            "dashes": _dotted(parts, "-"),
            "reversed": ".".join(reversed(parts)),
        }
    else:
        forms |= {
            "expanded_upper": ip.exploded.upper(),
            "percent_colons": text.replace(":", "%3A"),
            "zone": f"{text}%25eth0",
            "no_colons": ip.exploded.replace(":", ""),
            "reversed_nibbles": ip.reverse_pointer,
            "dashes": text.replace(":", "-"),
        }
    return forms


def spellings_redirect(address: str) -> tuple[int, list[tuple[str, str]]]:
    """The first hop: a redirect whose Location (and so the next request URL) holds the address."""
    escaped = quote(str(ipaddress.ip_address(address)), safe="").replace(".", "%2E")
    return 302, [("Location", f"{_SEEN_PATH}?from={escaped}")]


def spellings_page(address: str) -> tuple[str, list[tuple[str, str]]]:
    """The page the redirect lands on, and its extra response headers."""
    forms = address_spellings(address)
    # Raw, not HTML-escaped: "&#46;" must reach the client as the entity it is.
    rows = "\n".join(f'<li id="{name}">{value}</li>' for name, value in forms.items())
    # A JSON island as pages embed it: the dots as \u002e escapes inside a script.
    island = json.dumps({"client": forms["plain"]}).replace(".", "\\u002e")
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>Seen from {html.escape(forms['plain'])}</title>\n</head>\n<body>\n"
        f"<ul>\n{rows}\n</ul>\n<script>var seen = {island};</script>\n</body>\n</html>\n"
    )
    headers = [(f"X-Seen-{name.replace('_', '-')}", value) for name, value in forms.items()]
    headers.append(("Set-Cookie", f"token={forms['base64_token']}; Path=/; HttpOnly"))
    # In a header whose value a measurement keeps (the fingerprints read Server): scrubbing must remove it.
    headers.append(("Server", f"gatewatch-lab echo for {forms.get('decimal_integer', forms['plain'])}"))
    return page, headers


def is_spellings_target(target: str) -> bool:
    return (
        target == SPELLINGS_PATH or target.startswith(SPELLINGS_PATH + "?") or target.startswith(_SEEN_PATH)
    )


def is_landing(target: str) -> bool:
    return target.startswith(_SEEN_PATH)

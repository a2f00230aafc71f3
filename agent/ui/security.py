"""The rules a request must pass before the page answers it (pure: no sockets, tested alone).

A web server on 127.0.0.1 is reachable by every local user and, through the browser, by every web page
the volunteer opens. So:

* the address must be a loopback one (:func:`parse_listen`), never a LAN or public one;
* the ``Host`` header must name the loopback address and port it listens on (:func:`host_allowed`): a
  page on an attacker's domain that re-resolves to 127.0.0.1 (DNS rebinding) sends its own name;
* every request carries the per-start random token, first in the URL the agent opens, then in a cookie
  (HttpOnly, SameSite=Strict) named after the port, so two pages of two agents do not overwrite each other;
* a state change is a POST carrying the token again (a form field or a header) and, when the browser
  says where it comes from (``Sec-Fetch-Site``, ``Origin``), coming from this page itself
  (:func:`same_origin`);
* every answer forbids framing, inline script, third-party content and the referrer
  (:data:`SECURITY_HEADERS`).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "TOKEN_FIELD",
    "TOKEN_HEADER",
    "ListenAddress",
    "NotLoopback",
    "Refusal",
    "cookie_name",
    "host_allowed",
    "new_token",
    "parse_listen",
    "same_origin",
    "session_cookie",
    "token_from_cookie",
    "tokens_match",
]

TOKEN_FIELD = "token"  # the query parameter of the first URL, and the form field of every POST
TOKEN_HEADER = "x-gatewatch-token"  # the page's scripts send the token in this header
LOOPBACK_NAMES = ("localhost",)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


class NotLoopback(ValueError):
    """A --listen address that is not on this machine's loopback (the volunteer's mistake)."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the status and a sentence for the volunteer."""

    status: int
    reason: str  # a short token, as the collector's errors
    detail: str


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP literal: 127.0.0.0/8 or ::1
    port: int  # 0: any free port

    def url_host(self, port: int) -> str:
        """How the address is written in a URL and a Host header."""
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"


def parse_listen(value: str) -> ListenAddress:
    """``127.0.0.1``, ``127.0.0.1:8800``, ``::1``, ``[::1]:8800`` or ``localhost[:port]``; anything not
    on the loopback is refused."""
    text = value.strip()
    host, port = text, "0"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise NotLoopback(f"cannot read {value!r} as an address")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if host.lower() in LOOPBACK_NAMES:
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise NotLoopback(f"{value!r} is not a loopback IP address (use 127.0.0.1 or ::1)") from None
    if not address.is_loopback:
        raise NotLoopback(
            f"{value!r} is not on the loopback: the page would be reachable from other machines"
        )
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NotLoopback(f"bad port in {value!r}")
    return ListenAddress(str(address), int(port))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def host_allowed(host_header: str | None, listen: ListenAddress, port: int) -> bool:
    """The Host header names the address we listen on (or ``localhost`` for 127.0.0.1), with our port."""
    if not host_header:
        return False
    allowed = {listen.url_host(port)}
    if listen.host == "127.0.0.1":
        allowed.add(f"localhost:{port}")
    return host_header.strip().lower() in allowed


def same_origin(origin: str | None, fetch_site: str | None, listen: ListenAddress, port: int) -> bool:
    """A POST comes from this page itself, as far as the browser tells: its ``Sec-Fetch-Site`` (sent by
    current browsers whatever the referrer policy) is ``same-origin``, and its ``Origin`` is ours.
    ``Origin: null`` is what a browser sends for our own forms under ``Referrer-Policy: no-referrer``, so it
    decides nothing alone; either header missing (an older browser) leaves the decision to the token."""
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return False
    if origin is None or origin.strip().lower() == "null":
        return True
    scheme, sep, rest = origin.strip().lower().partition("://")
    return scheme == "http" and bool(sep) and host_allowed(rest, listen, port)


def cookie_name(port: int) -> str:
    return f"gatewatch_ui_{port}"


def session_cookie(port: int, token: str) -> str:
    """The Set-Cookie value: readable by no script, sent by no other site, gone when the browser closes."""
    return f"{cookie_name(port)}={token}; Path=/; HttpOnly; SameSite=Strict"


def token_from_cookie(cookie_header: str | None, port: int) -> str | None:
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(cookie_name(port))
    return morsel.value if morsel is not None else None

"""The gate's pure rules: loopback-only listening, the Host check, Origin, the cookie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.agent.ui.security import (
    NotLoopback,
    host_allowed,
    parse_listen,
    same_origin,
    session_cookie,
    token_from_cookie,
    tokens_match,
)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 0),
        ("127.0.0.1:8800", "127.0.0.1", 8800),
        ("127.1.2.3:0", "127.1.2.3", 0),
        ("localhost:9000", "127.0.0.1", 9000),
        ("::1", "::1", 0),
        ("[::1]:8800", "::1", 8800),
    ],
)
def test_loopback_addresses_are_accepted(text: str, host: str, port: int) -> None:
    listen = parse_listen(text)
    assert (listen.host, listen.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "0.0.0.0:8080", "::", "[::]:80", "192.168.1.5:8080", "10.0.0.1", "example.org", "[::1]x",
     "127.0.0.1:99999", "127.0.0.1:http", "::ffff:192.168.1.5", "[fe80::1]:80"],
)  # fmt: skip
def test_anything_off_the_loopback_is_refused(text: str) -> None:
    with pytest.raises(NotLoopback):
        parse_listen(text)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses())
def test_only_loopback_ip_literals_pass(address: object) -> None:
    text = f"[{address}]:80" if ":" in str(address) else f"{address}:80"
    try:
        listen = parse_listen(text)
    except NotLoopback:
        assert not address.is_loopback  # type: ignore[attr-defined]
    else:
        assert address.is_loopback and listen.port == 80  # type: ignore[attr-defined]


def test_the_host_header_must_name_our_address_and_port() -> None:
    v4, v6 = parse_listen("127.0.0.1"), parse_listen("::1")
    assert host_allowed("127.0.0.1:4000", v4, 4000)
    assert host_allowed("localhost:4000", v4, 4000)
    assert host_allowed("LOCALHOST:4000", v4, 4000)
    assert host_allowed("[::1]:4000", v6, 4000)
    for wrong in (None, "", "127.0.0.1", "127.0.0.1:4001", "evil.example:4000", "127.0.0.1.nip.io:4000",
                  "[::1]:4000", "localhost", "0.0.0.0:4000"):  # fmt: skip
        assert not host_allowed(wrong, v4, 4000), wrong
    assert not host_allowed("localhost:4000", v6, 4000)


def test_origin_must_be_the_page_itself() -> None:
    v4 = parse_listen("127.0.0.1")
    assert same_origin(None, None, v4, 4000)  # not sent: the token alone decides
    assert same_origin("http://127.0.0.1:4000", "same-origin", v4, 4000)
    assert same_origin("null", "same-origin", v4, 4000)  # our own form under Referrer-Policy: no-referrer
    for other in ("http://evil.example", "https://127.0.0.1:4000", "http://127.0.0.1:4001", ""):
        assert not same_origin(other, None, v4, 4000), other
    for site in ("cross-site", "same-site"):
        assert not same_origin(None, site, v4, 4000) and not same_origin("null", site, v4, 4000)


def test_the_cookie_is_http_only_strict_and_per_port() -> None:
    cookie = session_cookie(4000, "abc")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert token_from_cookie("a=b; gatewatch_ui_4000=abc", 4000) == "abc"
    assert token_from_cookie("gatewatch_ui_4001=abc", 4000) is None
    assert token_from_cookie('bad="', 4000) is None
    assert tokens_match("abc", "abc") and not tokens_match("abd", "abc") and not tokens_match(None, "abc")

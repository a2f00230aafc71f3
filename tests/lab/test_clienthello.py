"""SNI parsing on real ClientHellos, produced by Python's ssl module into memory (no sockets)."""

from __future__ import annotations

import ssl

import pytest

from gatewatch.lab.clienthello import client_hello_record_length, parse_sni


def client_hello(server_name: str | None) -> bytes:
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_sni_of_a_real_client_hello_is_found() -> None:
    hello = client_hello("sni-reset.lab")
    assert client_hello_record_length(hello) == len(hello)
    assert parse_sni(hello) == "sni-reset.lab"


def test_no_sni_gives_none() -> None:
    assert parse_sni(client_hello(None)) is None


@pytest.mark.parametrize("cut", [3, 5, 40, 100])
def test_a_truncated_hello_gives_none(cut: int) -> None:
    assert parse_sni(client_hello("secure.lab")[:cut]) is None


def test_bytes_that_are_not_tls_give_none() -> None:
    assert parse_sni(b"GET / HTTP/1.1\r\nHost: secure.lab\r\n\r\n") is None
    assert client_hello_record_length(b"GET / HTTP/1.1\r\n") is None

"""probes/connection.py: the cheap test that spares parsing host names as IP addresses, and the datagram
inbox."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.probes.connection import may_be_ip_literal

_ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.ip_addresses(v=6).map(lambda ip: f"{ip}%eth0"),  # a scope id: letters after the colons
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_ADDRESSES, st.text(max_size=40), st.text("0123456789.:abcdefABCDEF%x", max_size=45)))
def test_what_it_rules_out_is_no_ip_address(text: str) -> None:
    """Whatever ipaddress.ip_address takes, may_be_ip_literal lets through."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return
    assert may_be_ip_literal(text)


@pytest.mark.parametrize(
    "name", ["example.com", "www.gatewatch.lab", "1.2.3.4.example", "0x7f.1", "١٢٧.0.0.1"]
)
def test_host_names_are_ruled_out(name: str) -> None:
    assert not may_be_ip_literal(name)


async def test_the_inbox_reads_at_most_its_limit_and_gives_up_at_the_deadline() -> None:
    """A flood of datagrams: only ``limit`` are read (the rest stay in the kernel); then nothing more
    comes and ``next`` returns None at the deadline; an ICMP unreachable comes as the error in its place."""
    import asyncio
    import socket

    from gatewatch.probes.connection import DatagramInbox

    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.connect(server.getsockname())
            client.send(b"?")
            _, address = server.recvfrom(16)
            for index in range(10):  # bounded
                server.sendto(bytes([index]), address)
            inbox = DatagramInbox(client, 3)
            try:
                got = [await inbox.next(loop.time() + 2) for _ in range(3)]
                assert got == [b"\x00", b"\x01", b"\x02"]
                started = loop.time()
                assert await inbox.next(loop.time() + 0.05) is None
                assert loop.time() - started >= 0.04
            finally:
                inbox.close()
            assert client.recv(16) == b"\x03"  # left unread by the inbox
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            port = gone.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.connect(("127.0.0.1", port))
            client.send(b"?")  # nobody listens: the kernel answers with an ICMP port unreachable
            inbox = DatagramInbox(client, 4)
            try:
                assert isinstance(await inbox.next(loop.time() + 2), ConnectionRefusedError)
            finally:
                inbox.close()

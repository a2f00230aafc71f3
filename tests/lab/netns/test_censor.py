"""The censor's forging, packet in → packets out (pure: scapy, no namespace, no root)."""

from __future__ import annotations

import ssl

import pytest

pytest.importorskip("scapy", reason="the lab's censor forges with scapy (pip install 'gatewatch[netns]')")

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP

from gatewatch.lab.netns.censor import CensorConfig, forge
from gatewatch.lab.netns.scenario import BLOCKPAGE_BODY, DNS_INJECTED_ADDRESS, SIGNATURES
from gatewatch.probes.packet_headers import parse_ipv4

CONFIG = CensorConfig(("d-isp-b",), ("bad.example",), ("bad.example",), ("bad.example",))
CLIENT, SERVER = "10.77.21.2", "10.77.200.80"


def _client_hello(name: str) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    try:
        context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name).do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _signature_of(packet) -> tuple[int, int, bool]:
    read = parse_ipv4(bytes(packet))
    return read.ip_id, read.ttl, read.df


@pytest.mark.parametrize("name", ["bad.example", "good.example"])
def test_dns_injection_answers_only_listed_names_with_the_signature(name: str) -> None:
    query = IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=53) / DNS(id=77, rd=1, qd=DNSQR(qname=name))
    forged = forge(IP(bytes(query)), CONFIG)
    if name != "bad.example":
        assert forged == []
        return
    (reply,) = forged
    signature = SIGNATURES["dns_injection"]
    assert _signature_of(reply) == (signature.ip_id, signature.ttl, signature.df)
    assert (reply[IP].src, reply[IP].dst, reply[UDP].dport) == (SERVER, CLIENT, 40000)
    assert reply[DNS].id == 77 and reply[DNS].an[0].rdata == DNS_INJECTED_ADDRESS


def test_a_client_hello_with_a_listed_sni_gets_resets_both_ways() -> None:
    hello = IP(src=CLIENT, dst=SERVER) / TCP(sport=50000, dport=443, seq=1000, ack=5000, flags="PA")
    forged = forge(IP(bytes(hello / _client_hello("bad.example"))), CONFIG)
    to_client, to_server = forged
    signature = SIGNATURES["tls_reset"]
    assert to_client[IP].dst == CLIENT and to_client[TCP].seq == 5000 and str(to_client[TCP].flags) == "R"
    assert to_server[IP].dst == SERVER and to_server[TCP].seq == 1000 + len(_client_hello("bad.example"))
    assert all(p[TCP].window == signature.window for p in forged)
    assert forge(IP(bytes(hello / _client_hello("good.example"))), CONFIG) == []


def test_a_request_for_a_listed_host_gets_the_blockpage_then_a_fin() -> None:
    request = b"GET / HTTP/1.1\r\nHost: bad.example\r\n\r\n"
    packet = IP(src=CLIENT, dst=SERVER) / TCP(sport=50001, dport=80, seq=10, ack=900, flags="PA") / request
    page, fin = forge(IP(bytes(packet)), CONFIG)
    assert bytes(page[TCP].payload).endswith(BLOCKPAGE_BODY)
    assert page[TCP].seq == 900 and page[TCP].ack == 10 + len(request)
    assert fin[TCP].seq == 900 + len(bytes(page[TCP].payload)) and str(fin[TCP].flags) == "FA"
    other = (
        IP(src=CLIENT, dst=SERVER)
        / TCP(sport=50001, dport=80, flags="PA")
        / b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert forge(IP(bytes(other)), CONFIG) == []

"""The lab's HTTP/HTTPS servers and the middleboxes in front of them, driven by raw socket/ssl clients."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gatewatch.lab import Lab
from gatewatch.lab.pages import BLOCKPAGE_MARKER, BLOCKPAGE_TITLE

from .conftest import connect, http_get, https_get, tls_client_context

pytestmark = pytest.mark.lab

SOURCES = {"clean": "127.0.0.1", "isp-a": "127.65.0.10", "isp-b": "127.66.0.10", "isp-c": "127.67.0.10"}


async def get(lab: Lab, network: str, domain: str, *, host: str | None = None, method: str = "GET"):
    address = lab.server_address(domain)
    assert address is not None
    return await asyncio.to_thread(
        http_get, SOURCES[network], address, lab.http_port, host or domain, method=method
    )


async def test_a_clean_page_is_the_same_for_every_network(lab: Lab) -> None:
    pages = [await get(lab, network, "clean.lab") for network in SOURCES]
    assert {p.status for p in pages} == {200}
    assert len({p.body for p in pages}) == 1
    body = pages[0].body
    assert b"<title>clean.lab" in body and 2000 < len(body) < 10000
    assert pages[0].headers["content-length"] == str(len(body))


async def test_head_has_no_body_and_other_methods_are_refused(lab: Lab) -> None:
    head = await get(lab, "isp-a", "clean.lab", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 2000
    assert (await get(lab, "isp-a", "clean.lab", method="DELETE")).status == 405


@pytest.mark.parametrize("network", ["isp-a", "isp-b"])
async def test_the_blockpage_replaces_the_site_in_censored_networks(lab: Lab, network: str) -> None:
    page = await get(lab, network, "blockpage.lab")
    assert page.status == 403
    assert BLOCKPAGE_MARKER.encode() in page.body
    assert f"<title>{BLOCKPAGE_TITLE}</title>".encode() in page.body


async def test_the_blockpage_depends_on_the_host_header_and_the_network(lab: Lab) -> None:
    clean = await get(lab, "clean", "blockpage.lab")
    assert clean.status == 200 and BLOCKPAGE_MARKER.encode() not in clean.body
    # Same server address, another Host: the middlebox keys on Host, so the request passes.
    other_host = await get(lab, "isp-a", "blockpage.lab", host="clean.lab")
    assert other_host.status == 200 and b"<title>clean.lab" in other_host.body
    # ... and the blocked Host is blocked whatever address it is sent to.
    moved = await get(lab, "isp-a", "clean.lab", host="blockpage.lab:80")
    assert moved.status == 403


async def test_an_isp_level_blockpage_appears_in_its_network_only(lab: Lab) -> None:
    assert (await get(lab, "isp-a", "isp-blockpage.lab")).status == 403
    for network in ("isp-b", "clean"):
        page = await get(lab, network, "isp-blockpage.lab")
        assert page.status == 200 and BLOCKPAGE_MARKER.encode() not in page.body


@pytest.mark.parametrize("network", list(SOURCES))
async def test_echo_shows_the_client_its_address(lab: Lab, network: str) -> None:
    source = SOURCES[network]
    page = await get(lab, network, "echo.lab")
    assert page.headers["x-client-address"] == source
    assert f"<title>Your address is {source}</title>".encode() in page.body
    assert page.body.count(source.encode()) >= 2  # title and body


async def test_an_unknown_host_gets_404(lab: Lab) -> None:
    assert (await get(lab, "isp-a", "clean.lab", host="elsewhere.example")).status == 404


async def test_malformed_requests_get_400(lab: Lab) -> None:
    def send_garbage() -> bytes:
        with connect("127.65.0.10", lab.server_address("clean.lab") or "", lab.http_port) as sock:
            sock.sendall(b"\x16\x03\x01 definitely not http\r\n\r\n")
            return sock.recv(1024)

    assert (await asyncio.to_thread(send_garbage)).startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("network", list(SOURCES))
async def test_https_certificates_validate_against_the_lab_ca(lab: Lab, network: str) -> None:
    for domain in ("secure.lab", "clean.lab"):
        address = lab.server_address(domain)
        page = await asyncio.to_thread(
            https_get, SOURCES[network], address, lab.https_port, domain, lab.ca_file
        )
        assert page.status == 200 and f"<title>{domain}".encode() in page.body


async def test_a_certificate_is_for_its_own_name_only(lab: Lab) -> None:
    # No certificate for an unknown SNI: the address's own one is served, and validation fails.
    address = lab.server_address("secure.lab")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
        await asyncio.to_thread(https_get, "127.0.0.1", address, lab.https_port, "other.example", lab.ca_file)
    # Without the lab CA, nothing validates.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(_handshake_with_system_roots, address or "", lab.https_port)


def _handshake_with_system_roots(address: str, port: int) -> None:
    with (
        connect("127.0.0.1", address, port) as raw,
        ssl.create_default_context().wrap_socket(raw, server_hostname="secure.lab"),
    ):
        pass


def _handshake(source: str, address: str, port: int, server_name: str, ca_file: str) -> str | None:
    """None if the handshake completes, else the error's class name."""
    try:
        with (
            connect(source, address, port) as raw,
            tls_client_context(ca_file).wrap_socket(raw, server_hostname=server_name),
        ):
            return None
    except ConnectionResetError:
        return "ConnectionResetError"
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("network", ["isp-a", "isp-b"])
async def test_tls_is_reset_after_a_client_hello_naming_the_domain(lab: Lab, network: str) -> None:
    address = lab.server_address("sni-reset.lab")
    args = (address, lab.https_port)
    blocked = await asyncio.to_thread(_handshake, SOURCES[network], *args, "sni-reset.lab", lab.ca_file)
    assert blocked == "ConnectionResetError"
    # Same network, same address, another SNI: the middlebox only looks at the name.
    other = await asyncio.to_thread(_handshake, SOURCES[network], *args, "secure.lab", lab.ca_file)
    assert other is None


async def test_tls_is_not_reset_for_the_clean_vantage(lab: Lab) -> None:
    address = lab.server_address("sni-reset.lab")
    page = await asyncio.to_thread(
        https_get, "127.0.0.1", address, lab.https_port, "sni-reset.lab", lab.ca_file
    )
    assert page.status == 200


def _connect_outcome(source: str, address: str, port: int, timeout: float) -> str:
    try:
        with connect(source, address, port, timeout=timeout):
            return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


async def test_the_blackhole_drops_syns_from_censored_networks(lab: Lab) -> None:
    address = lab.server_address("blackhole.lab") or ""
    attempts = [(network, port) for network in ("isp-a", "isp-b") for port in (lab.http_port, lab.https_port)]
    outcomes = await asyncio.gather(
        *(asyncio.to_thread(_connect_outcome, SOURCES[n], address, port, 0.5) for n, port in attempts)
    )
    assert outcomes == ["timeout"] * len(attempts)


async def test_the_blackhole_spares_the_clean_vantage(lab: Lab) -> None:
    if lab.blackhole_mode != "bpf":
        pytest.skip(
            f"blackhole mode is {lab.blackhole_mode!r}: this kernel refused SO_ATTACH_FILTER, so the lab "
            "fell back to dropping SYNs from every network"
        )
    address = lab.server_address("blackhole.lab") or ""
    for port in (lab.http_port, lab.https_port):
        assert await asyncio.to_thread(_connect_outcome, SOURCES["clean"], address, port, 0.5) == "connected"
    assert (await get(lab, "clean", "blackhole.lab")).status == 200


async def test_other_addresses_are_reachable_from_censored_networks(lab: Lab) -> None:
    outcome = await asyncio.to_thread(
        _connect_outcome, SOURCES["isp-a"], lab.server_address("clean.lab") or "", lab.http_port, 0.5
    )
    assert outcome == "connected"


async def test_nothing_listens_at_the_injected_address(lab: Lab) -> None:
    outcome = await asyncio.to_thread(_connect_outcome, "127.65.0.10", "127.99.0.1", lab.http_port, 0.5)
    assert outcome == "ConnectionRefusedError"


def test_sources_match_the_lab_networks() -> None:
    from gatewatch.lab import NETWORKS

    assert SOURCES == {name: n.source_address for name, n in NETWORKS.items()}

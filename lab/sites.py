"""The lab's web servers, with the censor's HTTP and TLS middleboxes in front of them.

``respond()`` is the pure part (request + who asks -> response); ``LabSites`` is the I/O shell: one
listener per server address and scheme, all sharing one HTTP port and one HTTPS port. With the scenario's
``wildcard`` on, a few more addresses serve every unlisted name a clean page, over TLS with a certificate
the lab CA issues when the name first arrives in an SNI; the scenario's latency delays the TLS handshake
and the HTTP response (and, in ``AcceptLoop``, the first byte after the accept).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import h11

from .blackhole import BLACKHOLE_ACCEPT_QUEUE, BLACKHOLE_BPF, FullAcceptQueue, try_source_filter
from .certs import LabPKI
from .clienthello import client_hello_record_length, parse_sni
from .echo import is_landing, is_spellings_target, spellings_page, spellings_redirect
from .listeners import bind_same_port
from .networks import NETWORKS, network_of
from .pages import BLOCKPAGE_STATUS, blockpage, clean_page, echo_page
from .scenario import Scenario
from .serving import AcceptLoop, open_accepted_streams
from .wildcard import is_wildcard_name

__all__ = ["LabResponse", "LabSites", "respond"]

READ_TIMEOUT = 5.0
CLOSE_TIMEOUT = 2.0
MAX_TLS_RECORD = 5 + 16384 + 2048
PEEK_INTERVAL = 0.005
SERVER_HEADER = "gatewatch-lab"
FILTER_SERVER_HEADER = "LabFilter"  # the middlebox identifies itself differently from the site
# Certificates issued for wildcard names, kept for reuse: a test list's names, with room to spare.
MAX_ISSUED_CONTEXTS = 4096


@dataclass(frozen=True)
class LabResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def respond(
    scenario: Scenario,
    host: str,
    method: str,
    client_address: str,
    *,
    cleartext: bool,
    wildcard: bool = False,
    target: str = "/",
) -> LabResponse:
    """The response a client from ``client_address`` gets for ``method`` on ``host``.

    With ``wildcard``, a hostname the scenario does not list is a clean site (no censor touches it).
    """
    network = network_of(client_address)
    spec = scenario.domain(host) if host in scenario else None
    # An IP-literal URL reaches a wildcard site too (no DNS, no SNI): a real server there would answer.
    served = spec.exists if spec is not None else wildcard and (is_wildcard_name(host) or _is_ip(host))
    if not served:
        return _html(404, "<html><head><title>Not Found</title></head><body>No such site</body></html>\n")
    # A transparent proxy sees cleartext requests only; it answers before the site is ever reached.
    if spec is not None and cleartext and spec.applies("http_blockpage", network):
        return _html(BLOCKPAGE_STATUS, blockpage(spec.name), server=FILTER_SERVER_HEADER)
    if method not in ("GET", "HEAD"):
        return _html(405, "<html><head><title>Method Not Allowed</title></head></html>\n")
    if spec is None:
        return _html(200, clean_page(host.lower().rstrip(".")))
    if spec.applies("echo_client", network) and is_spellings_target(target):
        if not is_landing(target):
            status, headers = spellings_redirect(client_address)
            return LabResponse(status, b"", headers)
        page, headers = spellings_page(client_address)  # its own Server header among them
        return LabResponse(200, page.encode(), [("Content-Type", "text/html; charset=utf-8"), *headers])
    if spec.applies("echo_client", network):
        response = _html(200, echo_page(spec.name, client_address))
        response.headers.append(("X-Client-Address", client_address))
        return response
    return _html(200, clean_page(spec.name))


def _html(status: int, text: str, server: str = SERVER_HEADER) -> LabResponse:
    return LabResponse(
        status,
        text.encode(),
        [("Server", server), ("Content-Type", "text/html; charset=utf-8")],
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_without_port(value: str) -> str:
    host = value.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


class LabSites:
    """HTTP and HTTPS on every server address; blackholes and resets applied per client network."""

    def __init__(
        self,
        scenario: Scenario,
        server_addresses: Mapping[str, str],
        pki: LabPKI,
        *,
        wildcard_addresses: Sequence[str] = (),
    ) -> None:
        self._scenario = scenario
        self._pki = pki
        self._latency = scenario.latency
        self._domain_at = {address: domain for domain, address in server_addresses.items()}
        self._contexts = {domain: pki.server_context(domain) for domain in server_addresses}
        # What a client gets without SNI (or with an unknown one): the address's own certificate; a
        # wildcard address's names its address (an IP SAN), since no single name lives there.
        self._address_contexts = {address: self._contexts[d] for address, d in self._domain_at.items()}
        self._address_contexts |= {address: pki.issue_context(address) for address in wildcard_addresses}
        self._issued: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        for context in self._address_contexts.values():
            context.sni_callback = self._select_certificate
        self._loops: list[AcceptLoop] = []
        self._full_queues: list[FullAcceptQueue] = []
        # How blackholes work in this run: "bpf" (per network), "accept-queue" (fallback: for everyone),
        # or None when the scenario has no blackhole.
        self.blackhole_mode: str | None = None
        self.http_port = 0
        self.https_port = 0
        self._addresses = [*server_addresses.values(), *wildcard_addresses]
        self._server_addresses = dict(server_addresses)

    async def start(self) -> None:
        if not self._addresses:
            return
        self.http_port, http_sockets = bind_same_port(self._addresses)
        try:
            self.https_port, https_sockets = bind_same_port(self._addresses)
        except OSError:
            for sock in http_sockets.values():
                sock.close()
            raise
        served = [(s, self._serve_cleartext) for s in http_sockets.values()]
        served += [(s, self._serve_tls) for s in https_sockets.values()]
        try:
            self._full_queues = self._blackhole(http_sockets, https_sockets)
            never_accepted = {queue.listener for queue in self._full_queues}
            served = [(sock, handler) for sock, handler in served if sock not in never_accepted]
            await asyncio.gather(*(asyncio.to_thread(queue.fill) for queue in self._full_queues))
        except BaseException:
            for sock in [*http_sockets.values(), *https_sockets.values()]:
                sock.close()
            for queue in self._full_queues:
                queue.close()
            self._full_queues = []
            raise
        for sock, handler in served:
            loop = AcceptLoop(sock, handler, latency=self._latency)
            loop.start()
            self._loops.append(loop)

    async def close(self) -> None:
        loops, self._loops = self._loops, []
        await asyncio.gather(*(loop.close() for loop in loops))
        for queue in self._full_queues:
            queue.close()
        self._full_queues = []

    def _blackhole(
        self, http_sockets: Mapping[str, socket.socket], https_sockets: Mapping[str, socket.socket]
    ) -> list[FullAcceptQueue]:
        """Filter the blackholed addresses' listeners; the fallback queues for those the kernel refused."""
        fallbacks: list[FullAcceptQueue] = []
        for spec in self._scenario.domains:
            if "blackhole" not in spec.behaviours or spec.name not in self._server_addresses:
                continue
            cidrs = [NETWORKS[network].cidr for network in spec.networks]
            address = self._server_addresses[spec.name]
            # Before listen(): no SYN from an affected network is ever answered.
            pair = (http_sockets[address], https_sockets[address])
            if all(try_source_filter(sock, cidrs) for sock in pair):
                self.blackhole_mode = self.blackhole_mode or BLACKHOLE_BPF
            else:
                self.blackhole_mode = BLACKHOLE_ACCEPT_QUEUE
                fallbacks.extend(FullAcceptQueue(sock) for sock in pair)
        return fallbacks

    def _select_certificate(self, ssl_object: ssl.SSLObject, server_name: str | None, _: object) -> None:
        if server_name is None:
            return  # the address's own certificate stays, as a real virtual host would do
        name = server_name.lower().rstrip(".")
        context = self._contexts.get(name)
        if context is None and self._scenario.wildcard and name not in self._scenario:
            context = self._wildcard_context(name)
        if context is not None:
            ssl_object.context = context
        # Unknown SNI: the address's own certificate stays.

    def issue_certificates(self, names: Iterable[str]) -> int:
        issued = 0
        for name in names:
            name = name.lower().rstrip(".")
            if self._scenario.wildcard and name not in self._scenario and name not in self._issued:
                issued += self._wildcard_context(name) is not None
        return issued

    def _wildcard_context(self, name: str) -> ssl.SSLContext | None:
        """The certificate for an unlisted name, issued by the lab CA the first time it is asked for."""
        if not is_wildcard_name(name):
            return None
        context = self._issued.get(name)
        if context is None:
            # Issued inside the handshake (a few milliseconds of CPU): SNI callbacks cannot await.
            context = self._pki.issue_context(name)
            self._issued[name] = context
            if len(self._issued) > MAX_ISSUED_CONTEXTS:
                self._issued.popitem(last=False)
        else:
            self._issued.move_to_end(name)
        return context

    async def _serve_cleartext(self, conn: socket.socket, client_address: str) -> None:
        reader, writer = await open_accepted_streams(conn)
        await self._exchange(reader, writer, client_address, cleartext=True)

    async def _serve_tls(self, conn: socket.socket, client_address: str) -> None:
        hello = await _peek_client_hello(conn)
        if not hello:
            return
        sni = parse_sni(hello)
        network = network_of(client_address)
        if (
            sni is not None
            and sni in self._scenario
            and self._scenario.domain(sni).applies("tls_reset", network)
        ):
            _reset(conn)
            return
        context = self._address_contexts.get(conn.getsockname()[0])
        if context is None:
            return
        if self._latency > 0:
            await asyncio.sleep(self._latency)  # the handshake's round trip, before the ServerHello
        # The ClientHello was only peeked at: it is still queued for the real handshake.
        reader, writer = await open_accepted_streams(conn, context)
        await self._exchange(reader, writer, client_address, cleartext=False)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_address: str,
        *,
        cleartext: bool,
    ) -> None:
        try:
            local_domain = self._domain_at.get(writer.get_extra_info("sockname")[0], "")
            request = await _read_request(reader)
            if request is None:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                method, host, target = request
                response = respond(
                    self._scenario,
                    host or local_domain,
                    method,
                    client_address,
                    cleartext=cleartext,
                    wildcard=self._scenario.wildcard,
                    target=target,
                )
                if self._latency > 0:
                    await asyncio.sleep(self._latency)  # the request's round trip
                writer.write(_serialise(response, head=method == "HEAD"))
            await writer.drain()
            writer.close()
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await writer.wait_closed()
        finally:
            # Idempotent after a clean close; immediate when cancelled or when a TLS peer never answers
            # our close_notify.
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, str] | None:
    """(method, host, target) of the first request, or None when it is not valid HTTP/1.x."""
    parser = h11.Connection(h11.SERVER)
    async with asyncio.timeout(READ_TIMEOUT):
        for _ in range(64):  # each round reads up to 64 KiB; h11 caps a request head at 16 KiB anyway
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                parser.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Request):
                host = dict(event.headers).get(b"host", b"").decode("latin-1")
                method = event.method.decode("ascii", "replace")
                return method, _host_without_port(host), event.target.decode("latin-1")
            return None
    return None


def _serialise(response: LabResponse, *, head: bool) -> bytes:
    reason = {200: "OK", 302: "Found", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}.get(
        response.status, ""
    )
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines += [f"Content-Length: {len(response.body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else response.body)


async def _peek_client_hello(conn: socket.socket) -> bytes:
    """The first TLS record, read without consuming it (b"" if the client sent nothing usable)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            await readable
    except TimeoutError:
        return b""
    finally:
        loop.remove_reader(conn.fileno())
    data = b""
    for _ in range(int(READ_TIMEOUT / PEEK_INTERVAL)):  # bounded: the rest of a hello split in segments
        try:
            data = conn.recv(MAX_TLS_RECORD, socket.MSG_PEEK)
        except BlockingIOError:
            pass
        except OSError:
            return b""
        else:
            if not data:
                return b""
            needed = client_hello_record_length(data)
            if needed is None or len(data) >= needed:
                return data
        await asyncio.sleep(PEEK_INTERVAL)
    return data


def _reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST, as a middlebox injecting one after a ClientHello."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()

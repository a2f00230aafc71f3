"""One pass over a test list: geolocate, measure, ask the control, judge, anonymise, sign, queue, upload.

The pass is polite and bounded: at most ``concurrency`` measurements at once and ``per_host`` per
destination host; a time budget and an optional byte budget are checked while it runs, and a pass that
hits one stops cleanly (measurements already taken are queued, none is half-written) and says which.

Order of the steps for each URL matters for privacy and durability: the measurement is anonymised
*before* it is signed, and signed and written to the queue *before* any upload is attempted.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import platform
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.core.bogons import is_bogon
from gatewatch.core.control import ControlObservations
from gatewatch.core.envelope import sign
from gatewatch.core.measurement import Measurement, WebTestKeys, format_utc, utc_now
from gatewatch.core.verdicts import Verdict
from gatewatch.core.wire import ControlRequest
from gatewatch.probes.config import DNSConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.trace import Trace

from .anonymise import SCRUBBED, Identity, anonymise, is_lan_address
from .collector_api import ApiFailure, Geolocation, geolocate, make_session
from .control_batch import ControlBatcher
from .http_client import HttpClient
from .netinfo import ROUTE_PROBES, NetworkView, machine_addresses, observe_network
from .queue import MeasurementQueue, QueueFull
from .testlists import TestListEntry
from .upload import RetryPolicy, Uploader, UploadReport

__all__ = [
    "LAST_RUN_KEY",
    "RunEvent",
    "RunOptions",
    "RunSummary",
    "UrlResult",
    "build_measurement",
    "bytes_received",
    "classify_own_addresses",
    "usable_probe_ip",
    "run_pass",
]

log = logging.getLogger(__name__)

LAST_RUN_KEY = "last_run"
WITHHELD_ASN = "AS0"
WITHHELD_CC = "ZZ"
SUMMARY_ROWS = 200  # per kind of result: what the summary table at the end of a pass can show

StopReason = Literal[
    "time_budget", "byte_budget", "queue_full", "network_changed", "own_address_unknown", "interrupted"
]


class MeasureFn(Protocol):
    def __call__(
        self,
        url: str,
        config: WebConfig,
        *,
        trace: Trace | None = None,
        on_resolved: Callable[[list[str]], None] | None = None,
    ) -> Awaitable[WebTestKeys]: ...


AnalyseFn = Callable[[str, WebTestKeys, ControlObservations, Any], Verdict]


@dataclass(frozen=True)
class RunOptions:
    collector_urls: tuple[str, ...] = ()
    control_url: str | None = None
    probe_asn: str | None = None  # override ("AS0" withholds)
    probe_cc: str | None = None  # override ("ZZ" withholds)
    resolver: str | None = None
    ca_file: str | None = None
    source_address: str | None = None  # lab: bind probes and the agent's own HTTP client here
    routable: tuple[str, ...] = ()  # lab: CIDRs not to treat as bogons
    concurrency: int = 8
    per_host: int = 2
    max_runtime: float | None = 3600.0
    max_bytes: int | None = None
    upload: bool = True
    upload_batch: int = 50
    upload_retry: RetryPolicy = field(default_factory=RetryPolicy)
    run_type: Literal["manual", "timed"] = "manual"
    # Public addresses whose route (never a packet) tells the machine's own source addresses.
    route_probes: tuple[str, ...] = ROUTE_PROBES

    @property
    def lab(self) -> bool:
        """A lab run: the agent is bound to, or routes to, addresses that are not public."""
        return bool(self.source_address or self.routable)

    def web_config(self) -> WebConfig:
        return WebConfig(
            dns=DNSConfig(resolver=self.resolver, source_address=self.source_address, routable=self.routable),
            tcp=TCPConfig(source_address=self.source_address),
            tls=TLSConfig(ca_file=self.ca_file),
        )


@dataclass(frozen=True, slots=True)  # slotted: a pass keeps up to 3 x SUMMARY_ROWS until its summary
class UrlResult:
    url: str
    category: str
    measurement_uid: str
    blocking: str | bool | None  # as in Verdict.blocking; None = no verdict
    layer: str | None
    fingerprint: str | None
    control_failure: str | None

    @property
    def blocked(self) -> bool:
        return self.blocking not in (False, None)


@dataclass(frozen=True)
class RunEvent:
    kind: Literal["started", "measured", "stopped", "uploading", "uploaded"]
    total: int
    done: int
    blocked: int
    result: UrlResult | None = None
    message: str | None = None


@dataclass
class RunSummary:
    started_at: str
    total: int
    finished_at: str | None = None
    measured: int = 0
    blocked: int = 0
    no_verdict: int = 0
    bytes_received: int = 0
    errors: int = 0  # URLs not measured because of a bug (logged)
    stop_reason: StopReason | None = None
    stop_detail: str | None = None
    probe_asn: str = WITHHELD_ASN
    probe_cc: str = WITHHELD_CC
    # The rows the summary table can show: at most SUMMARY_ROWS of each kind (blocked, no verdict,
    # accessible), so a pass over thousands of URLs does not keep a row for each (the memory goal).
    results: list[UrlResult] = field(default_factory=list)
    # Every measurement this pass queued, should they have to be kept local after all.
    measurement_uids: list[str] = field(default_factory=list)
    upload: UploadReport | None = None
    _shown: dict[str, int] = field(default_factory=dict, repr=False)  # rows kept, by kind

    def add(self, result: UrlResult, *, verdict: bool) -> None:
        self.measurement_uids.append(result.measurement_uid)
        self.measured += 1
        self.blocked += result.blocked
        self.no_verdict += not verdict
        kind = _kind(result)
        if self._shown.get(kind, 0) < SUMMARY_ROWS:
            self._shown[kind] = self._shown.get(kind, 0) + 1
            self.results.append(result)

    @property
    def completed(self) -> bool:
        return self.stop_reason is None

    def as_record(self) -> dict[str, Any]:
        """What ``status`` shows later (no URLs, no addresses)."""
        # Field by field, not asdict(): that would deep-copy every result first, only to drop them (a
        # megabyte at the end of a long pass, the agent's memory peak).
        skip = ("results", "measurement_uids", "upload", "_shown")
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        if self.upload is not None:
            record["upload"] = self.upload.as_dict()
        return record


def _kind(result: UrlResult) -> str:
    return "blocked" if result.blocked else "unknown" if result.blocking is None else "accessible"


@functools.cache
def software_version() -> str:
    try:
        return metadata.version("gatewatch")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def platform_family() -> str:
    """The OS family only ("linux"), never a release, host name or machine id."""
    system = platform.system().lower()
    return {"darwin": "macos"}.get(system, system if system in ("linux", "windows", "freebsd") else "other")


def bytes_received(keys: WebTestKeys) -> int:
    """An estimate of the bytes a measurement downloaded (bodies and headers as recorded, certificate
    chains, DNS replies): what the byte budget counts."""
    total = 0
    for query in keys.queries:
        total += 512 * max(1, len(query.replies))
    for handshake in keys.tls_handshakes:
        total += 1024 + sum(len(c.der_b64 or "") * 3 // 4 for c in handshake.peer_certificates)
    for request in keys.requests:
        if request.response is not None:
            total += request.response.body_length + 16
            total += sum(len(k) + len(v) + 4 for k, v in request.response.headers)
    return total


def _answered_addresses(keys: WebTestKeys) -> list[str]:
    return [answer.address for query in keys.queries for answer in query.answers if answer.address]


def _control_addresses(addresses: Iterable[str], identity: Identity) -> list[str]:
    """Addresses the probe's DNS gave, for the control (minus the agent's own, should a resolver have
    echoed it: the collector must never receive it)."""
    found: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if str(ip) not in found and identity.replacement(ip) is None:
            found.append(str(ip))
    return found[:16]


def _interference_layer(verdict: Verdict | None) -> str | None:
    if verdict is None:
        return None
    for layer in verdict.layers:
        if layer.outcome == "interference":
            return layer.layer
    return None


def _fingerprint_label(verdict: Verdict | None) -> str | None:
    if verdict is None or verdict.fingerprint is None:
        return None
    return verdict.fingerprint.blockpage_id or verdict.fingerprint.technique


def build_measurement(
    entry: TestListEntry,
    keys: WebTestKeys,
    *,
    started: Any,
    pass_started: Any,
    runtime: float,
    geolocation: Geolocation,
    run_type: str = "manual",
) -> Measurement:
    """The top-level record around the test keys. Nothing about the machine goes in beyond the OS
    family: no host name, user, path, MAC or stable device id."""
    return Measurement(
        measurement_start_time=started,
        test_start_time=pass_started,
        test_runtime=max(0.0, round(runtime, 6)),
        probe_asn=geolocation.probe_asn,
        probe_cc=geolocation.probe_cc,
        probe_network_name=geolocation.probe_network_name[:256],
        input=entry.url,
        software_version=software_version(),
        annotations={
            "platform": platform_family(),
            "engine_name": "gatewatch",
            "run_type": run_type,
            "category_code": entry.category_code,
        },
        test_keys=keys,
    )


def usable_probe_ip(probe_ip: str | None, *, lab: bool = False) -> str | None:
    """The collector's view of our address if it can be one of ours on the internet (a global
    address; in a lab, any unicast address), else None. A private or loopback ``probe_ip`` means the
    collector saw a proxy or a NAT of its own, not us: scrubbing it would leave our address in place."""
    try:
        ip = ipaddress.ip_address(probe_ip or "")
    except ValueError:
        return None
    if ip.is_global or (lab and not (ip.is_unspecified or ip.is_multicast)):
        return str(ip)
    return None


def classify_own_addresses(addresses: list[str]) -> tuple[list[str], list[str]]:
    """(public, LAN) among the machine's own addresses; loopback and the like are neither (every
    machine has them)."""
    public: list[str] = []
    lan: list[str] = []
    for address in addresses:
        if is_lan_address(address):
            lan.append(address)
        elif usable_probe_ip(address) is not None:
            public.append(address)
    return public, lan


def _apply_overrides(found: Geolocation, options: RunOptions) -> Geolocation:
    asn = options.probe_asn or found.probe_asn
    cc = options.probe_cc or found.probe_cc
    # A network name from geolocation describes the real network: drop it when the ASN is overridden.
    name = found.probe_network_name if asn == found.probe_asn and asn != WITHHELD_ASN else ""
    return Geolocation(asn, cc, name, found.probe_ip)


def _default_measure() -> MeasureFn:
    from gatewatch.probes.web import measure

    return measure


def _default_analyse() -> tuple[AnalyseFn, Any]:
    from gatewatch.analysis import analyse, load_default_fingerprints

    return analyse, load_default_fingerprints()


class _HostSlot:
    """The ``per_host`` limit of one host, and how many workers hold or wait for it."""

    def __init__(self, per_host: int) -> None:
        self.semaphore = asyncio.Semaphore(per_host)
        self.users = 0


class _Pass:
    """The state of one pass, shared by its workers (one event loop: no locks needed)."""

    def __init__(
        self,
        entries: list[TestListEntry],
        options: RunOptions,
        queue: MeasurementQueue,
        key: Ed25519PrivateKey,
        session: HttpClient,
        measure: MeasureFn,
        analyse: AnalyseFn | None,
        fingerprints: Any,
        on_event: Callable[[RunEvent], None],
    ) -> None:
        self.entries = entries
        self.options = options
        self.queue = queue
        self.key = key
        self.session = session
        self.measure = measure
        self.analyse = analyse
        self.fingerprints = fingerprints
        self.on_event = on_event
        self.config = options.web_config()
        self.summary = RunSummary(started_at=format_utc(utc_now()), total=len(entries))
        self.pass_started = utc_now()
        self.next_index = 0
        # Per host: its semaphore and how many workers hold or wait for it. Dropped when that count is 0,
        # so that a pass over thousands of hosts does not keep a semaphore for each (the memory goal).
        self.host_slots: dict[str, _HostSlot] = {}
        self.geolocation = Geolocation(WITHHELD_ASN, WITHHELD_CC, "", None)
        self.identity = Identity()
        self.network: NetworkView | None = None
        self.collector_ip: str | None = None
        # Controls of measurements running together go to the collector in batches (by control URL).
        self.batchers: dict[str, ControlBatcher] = {}

    def stop(self, reason: StopReason, detail: str | None = None) -> None:
        if self.summary.stop_reason is None:
            self.summary.stop_reason = reason
            self.summary.stop_detail = detail
            log.info("pass stopping: %s%s", reason, f" ({detail})" if detail else "")

    def emit(self, kind: Any, result: UrlResult | None = None, message: str | None = None) -> None:
        s = self.summary
        self.on_event(RunEvent(kind, s.total, s.measured, s.blocked, result, message))

    async def worker(self) -> None:
        while self.summary.stop_reason is None and self.next_index < len(self.entries):
            entry = self.entries[self.next_index]
            self.next_index += 1
            if self.network is not None and self._network_changed():
                self.stop("network_changed", "the network changed during the pass")
                return
            slot = self.host_slots.get(entry.host)
            if slot is None:
                slot = self.host_slots[entry.host] = _HostSlot(self.options.per_host)
            slot.users += 1
            try:
                async with slot.semaphore:
                    try:
                        await self.measure_one(entry)
                    except Exception:  # a bug (network failures are data and never reach here): go on
                        log.exception("measuring %s failed", entry.url)
                        self.summary.errors += 1
            finally:
                slot.users -= 1
                if not slot.users:
                    del self.host_slots[entry.host]

    def _network_changed(self) -> bool:
        now = observe_network(self.collector_ip, self.options.source_address)
        return self.network is not None and now.signature != self.network.signature

    async def measure_one(self, entry: TestListEntry) -> None:
        started = utc_now()
        clock = time.monotonic()
        trace = Trace()
        # The control is asked for as soon as the probe has its addresses, and is measured by the
        # collector while the probe connects: a URL then costs the slower of the two, not their sum.
        asked: list[asyncio.Future[tuple[ControlObservations | None, str | None]]] = []

        def ask_control(addresses: list[str]) -> None:
            if not asked:
                asked.append(asyncio.ensure_future(self._control(entry.url, addresses)))

        try:
            keys = await self.measure(entry.url, self.config, trace=trace, on_resolved=ask_control)
            if not asked:  # no DNS step reported (a measure function without one): ask now
                ask_control(_answered_addresses(keys))
            control, control_failure = await asked[0]
        finally:
            for pending in asked:
                pending.cancel()  # only if the measurement itself failed or was cancelled
            # A cancelled request winds down before the pass goes on (to upload, on the same session),
            # and an outcome nobody awaited is still collected (no "exception never retrieved").
            await asyncio.gather(*asked, return_exceptions=True)
        verdict: Verdict | None = None
        if control is not None:
            try:
                if self.analyse is None:  # loaded on first use: a pass without a control needs none
                    self.analyse, self.fingerprints = _default_analyse()
                verdict = self.analyse(entry.url, keys, control, self.fingerprints)
            except Exception:  # a bug in the analysis must not end the pass: no verdict for this URL
                log.exception("analysis failed for %s", entry.url)
        keys = keys.model_copy(
            update={"control": control, "control_failure": control_failure, "verdict": verdict}
        )
        measurement = build_measurement(
            entry,
            keys,
            started=started,
            pass_started=self.pass_started,
            runtime=time.monotonic() - clock,
            geolocation=self.geolocation,
            run_type=self.options.run_type,
        )
        measurement = anonymise(measurement, self.identity)
        payload = measurement.to_json_bytes()
        try:
            envelope = sign(payload, self.key)
            self.queue.enqueue(
                measurement.measurement_uid, payload, envelope, local_only=not self.options.upload
            )
        except QueueFull as exc:
            self.stop("queue_full", str(exc))
            return
        self._count(entry, measurement, keys)

    def _count(self, entry: TestListEntry, measurement: Measurement, keys: WebTestKeys) -> None:
        verdict = measurement.test_keys.verdict
        result = UrlResult(
            url=entry.url,
            category=entry.category_code,
            measurement_uid=measurement.measurement_uid,
            blocking=verdict.blocking if verdict else None,
            layer=_interference_layer(verdict),
            fingerprint=_fingerprint_label(verdict),
            control_failure=measurement.test_keys.control_failure,
        )
        s = self.summary
        s.add(result, verdict=verdict is not None)
        s.bytes_received += bytes_received(keys)
        self.emit("measured", result)
        if self.options.max_bytes is not None and s.bytes_received >= self.options.max_bytes:
            self.stop("byte_budget", f"{s.bytes_received} bytes received (budget {self.options.max_bytes})")

    async def _control(self, url: str, addresses: list[str]) -> tuple[ControlObservations | None, str | None]:
        base = self.options.control_url or (
            self.options.collector_urls[0] if self.options.collector_urls else None
        )
        if base is None:
            return None, "no_control_configured"
        request = ControlRequest(input=url, addrs=_control_addresses(addresses, self.identity))
        batcher = self.batchers.get(base)
        if batcher is None:
            batcher = self.batchers[base] = ControlBatcher(self.session, base)
        answer = await batcher.ask(request)
        if isinstance(answer, ApiFailure):
            return None, answer.failure
        return answer, None

    def _bases(self) -> list[str]:
        bases = list(self.options.collector_urls)
        if self.options.control_url and self.options.control_url not in bases:
            bases.append(self.options.control_url)
        return bases

    async def _geolocate(self) -> Geolocation | ApiFailure:
        bases = self._bases()
        return await geolocate(self.session, bases) if bases else ApiFailure("no collector configured")

    async def locate(self) -> bool:
        """Learn ASN/country and the addresses to scrub. False when the agent's public address cannot
        be learned and results would be uploaded: measuring then could publish it unscrubbed."""
        found = await self._geolocate()
        if isinstance(found, ApiFailure):
            if self.options.upload:
                self.stop("own_address_unknown", f"geolocate failed: {found}")
                return False
            found = Geolocation(WITHHELD_ASN, WITHHELD_CC, "", None)
        probe_ip = usable_probe_ip(found.probe_ip, lab=self.options.lab)
        if probe_ip is None and self.options.upload:
            # Not the address our traffic leaves with (missing, garbled, or a proxy's private one): what
            # we would scrub is not what an echoing site would see.
            self.stop("own_address_unknown", "the collector gave no usable public address for this machine")
            return False
        self.geolocation = _apply_overrides(found, self.options)
        self.summary.probe_asn = self.geolocation.probe_asn
        self.summary.probe_cc = self.geolocation.probe_cc
        self.collector_ip = await _first_address(self._bases())
        self.network = observe_network(self.collector_ip, self.options.source_address)
        # The machine's own addresses of both families: on a dual-stack network the probes may leave by
        # IPv6 while the collector was reached by IPv4 (or the other way round). A bound lab agent leaves
        # from its source address only.
        learned = [] if self.options.source_address else machine_addresses(self.options.route_probes)
        if self.network.local_address:
            learned.append(self.network.local_address)
        own, lan = classify_own_addresses(learned)
        if probe_ip:
            own.append(probe_ip)
        # IPv6 addresses are scrubbed by their /64 (Identity.of): privacy addresses rotate inside it.
        self.identity = Identity.of(
            own_addresses=own,
            own_names=await self._own_names(own),
            lan_addresses=[*self.network.gateways, *lan],
        )
        return True

    async def _own_names(self, own: list[str]) -> list[str]:
        """The reverse-DNS names of our public addresses: a site may echo "customer-4711.isp.example"
        instead of the address, and a name that does not spell the address out is found no other way.
        Asked of the resolver the pass measures with (which sees this machine's address anyway)."""
        from gatewatch.probes.dns import reverse_names

        public = [a for a in dict.fromkeys(own) if not is_bogon(a, self.options.routable)][:4]
        found = await asyncio.gather(*(reverse_names(a, self.config.dns) for a in public))
        return [name for names in found for name in names]

    async def confirm_address(self) -> None:
        """Before uploading: ask again where we are. If the collector now sees an address this pass did
        not scrub (the network changed mid-pass), this pass's measurements may carry it: they stay on
        the machine (state ``local``) instead of being uploaded under the old identity."""
        found = await self._geolocate()
        if isinstance(found, ApiFailure):
            if not self._network_changed():
                return  # the collector is flaky, the network is the same: nothing suggests a new address
            reason = f"the network changed during the pass and the address could not be confirmed ({found})"
        else:
            probe_ip = usable_probe_ip(found.probe_ip, lab=self.options.lab)
            if probe_ip is not None and self.identity.replacement(ipaddress.ip_address(probe_ip)) == SCRUBBED:
                return  # still one of ours (the same address, or the same IPv6 /64)
            reason = "the public address changed during the pass"
        kept = self.queue.keep_local(self.summary.measurement_uids, reason)
        log.warning("%s: %d measurements kept local, not uploaded", reason, kept)
        self.stop("network_changed", f"{reason}; this pass's measurements are kept local")


async def _first_address(bases: list[str]) -> str | None:
    """The collector's address, to find the local route toward it (resolved once per pass)."""
    for base in bases:
        host = urlsplit(base).hostname
        if not host:
            continue
        try:  # an address already (labs): no resolver thread to start, which costs memory (issue 4)
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=0)
        except OSError:
            continue
        if infos:
            return str(infos[0][4][0])
    return None


async def run_pass(
    entries: list[TestListEntry],
    options: RunOptions,
    queue: MeasurementQueue,
    key: Ed25519PrivateKey,
    *,
    session: HttpClient | None = None,
    measure: MeasureFn | None = None,
    analyse: AnalyseFn | None = None,
    fingerprints: Any = None,
    on_event: Callable[[RunEvent], None] | None = None,
) -> RunSummary:
    """Measure ``entries`` once, queue every result, then upload what is pending (unless disabled)."""
    own_session = session is None
    # Each measurement asks the collector for its control while it runs: allow as many collector calls in
    # flight as measurements, or the client's limit (not the network) sets the pace.
    session = session or make_session(
        source_address=options.source_address, ca_file=options.ca_file, limit=max(8, options.concurrency)
    )
    state = _Pass(
        entries,
        options,
        queue,
        key,
        session,
        measure or _default_measure(),
        analyse,
        fingerprints,
        on_event or (lambda event: None),
    )
    try:
        state.emit("started")
        if await state.locate():
            await _measure_all(state)
            if options.upload and state.summary.measurement_uids:
                await state.confirm_address()
        summary = state.summary
        summary.finished_at = format_utc(utc_now())
        state.emit("stopped", message=summary.stop_reason)
        if options.upload and options.collector_urls:
            state.emit("uploading")
            uploader = Uploader(
                queue,
                list(options.collector_urls),
                session,
                batch_size=options.upload_batch,
                policy=options.upload_retry,
            )
            summary.upload = await uploader.upload_pending()
            state.emit("uploaded", message=summary.upload.last_error)
        queue.set_meta(LAST_RUN_KEY, summary.as_record())
        return summary
    finally:
        if own_session:
            await session.close()


async def _measure_all(state: _Pass) -> None:
    workers = [asyncio.create_task(state.worker()) for _ in range(max(1, state.options.concurrency))]
    try:
        _, unfinished = await asyncio.wait(workers, timeout=state.options.max_runtime)
        if unfinished:
            state.stop("time_budget", f"{state.options.max_runtime:g} s elapsed")
    except asyncio.CancelledError:
        state.stop("interrupted")
        raise
    finally:
        # In-flight measurements are abandoned: none has been queued, so none is half-written.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for batcher in state.batchers.values():
            await batcher.close()

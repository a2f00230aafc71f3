"""One pass over a test list: geolocate, measure, ask the control, judge, anonymise, sign, queue, upload.

The pass is polite and bounded: at most ``concurrency`` measurements on the network at once and
``per_host`` per destination host, and a bounded number more waiting for late DNS replies and their
control (:mod:`.pacing`); a time budget and an optional byte budget are checked while it runs, and a pass that
hits one stops cleanly (measurements already taken are queued, none is half-written) and says which.

Order of the steps for each URL matters for privacy and durability: the measurement is anonymised and
minimised (:mod:`.minimise`: only what the judgement needs) *before* it is signed, and signed and
written to the queue *before* any upload is attempted.

The pass's records are in :mod:`.run_records`, the measurement it makes of a URL in :mod:`.build`, where
it is and what it scrubs in :mod:`.locate`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.analysis.fingerprints import FingerprintDB, load_default_fingerprints
from gatewatch.core.control import ControlObservations, VouchedControl
from gatewatch.core.envelope import sign
from gatewatch.core.measurement import Measurement, WebTestKeys, format_utc, utc_now
from gatewatch.core.verdicts import Verdict
from gatewatch.core.wire import Geolocation
from gatewatch.probes.config import WebConfig
from gatewatch.probes.trace import Trace

from .addresses import first_hops
from .anonymise import SCRUBBED, Identity, anonymise
from .batches import TokenBatches
from .build import build_measurement, bytes_received, fingerprint_label, interference_layer
from .collector_api import ApiFailure, make_session, where_am_i
from .control_batch import PassControls
from .http_client import HttpClient
from .locate import (
    WITHHELD,
    apply_overrides,
    first_address,
    own_identity,
    usable_probe_ip,
)
from .minimise import StoragePolicy, minimise, without_validated_der
from .netinfo import NetworkView, observe_network
from .pacing import Pacer, fewer_collections
from .pseudonym import with_pseudonym
from .queue import MeasurementQueue, QueueFull
from .queue_writes import QueueWrites
from .run_records import LAST_RUN_KEY, RunEvent, RunOptions, RunSummary, StopReason, UrlResult
from .testlists import TestListEntry
from .tokens import TokenWallet, WalletError
from .upload import Uploader

__all__ = ["run_pass", "token_batches"]

log = logging.getLogger(__name__)

# How often the pass looks at the machine's routes (a change of network stops it). Less often than every
# URL, as a route lookup costs more than the rest of starting one; far less than a measurement lasts.
NETWORK_CHECK_INTERVAL = 0.25  # seconds
# Controls asked within this long go to the collector in one request. A measurement waits for its DNS
# linger after its last connection anyway, so a window shorter than the linger delays no URL.
CONTROL_WINDOW = 0.05  # seconds


class MeasureFn(Protocol):
    def __call__(
        self,
        url: str,
        config: WebConfig,
        *,
        trace: Trace | None = None,
        on_resolved: Callable[[list[str]], None] | None = None,
        on_network_done: Callable[[], None] | None = None,
    ) -> Awaitable[WebTestKeys]: ...


AnalyseFn = Callable[[str, WebTestKeys, ControlObservations, Any], Verdict]


def _answered_addresses(keys: WebTestKeys) -> list[str]:
    return [answer.address for query in keys.queries for answer in query.answers if answer.address]


def _default_measure() -> MeasureFn:
    from gatewatch.probes.web import measure

    return measure


async def _packet_traces(
    url: str, keys: WebTestKeys, control: ControlObservations | None, options: RunOptions
) -> list[Any]:
    """The trace step (issue 17), loaded only when the volunteer enabled it."""
    from gatewatch.probes.packet_trace import PacketTraceConfig, trace_interfered

    domain = options.trace_control_domain
    config = PacketTraceConfig(control_hostname=domain) if domain else PacketTraceConfig()
    addresses = control.dns.addrs if control is not None else []
    return await trace_interfered(
        url, keys, keys.verdict.blocking if keys.verdict else None, addresses, config
    )


def _default_analyse() -> tuple[AnalyseFn, Any]:
    from gatewatch.analysis import analyse, load_default_fingerprints

    return analyse, load_default_fingerprints()


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
        self.geolocation: Geolocation = WITHHELD
        self.identity = Identity()
        self._storage: tuple[StoragePolicy, FingerprintDB] | None = None
        self.network: NetworkView | None = None
        self.collector_ip: str | None = None
        self.network_checked = 0.0  # time.monotonic() of the last look at the routes
        self.writes = QueueWrites(queue)  # measurements committed together (agent/queue_writes.py)
        # Controls of measurements running together go to the collector in batches.
        self.controls = PassControls(
            session, options.control_address, window=min(CONTROL_WINDOW, self.config.dns.linger / 2)
        )

    def stop(self, reason: StopReason, detail: str | None = None) -> None:
        if self.summary.stop_reason is None:
            self.summary.stop_reason = reason
            self.summary.stop_detail = detail
            log.info("pass stopping: %s%s", reason, f" ({detail})" if detail else "")

    def emit(self, kind: Any, result: UrlResult | None = None, message: str | None = None) -> None:
        s = self.summary
        self.on_event(RunEvent(kind, s.total, s.measured, s.blocked, result, message))

    def next_entry(self) -> TestListEntry | None:
        """The next URL to measure; None when there is none or the pass stops (the network changed)."""
        if self.summary.stop_reason is not None or self.next_index >= len(self.entries):
            return None
        if self._network_changed(throttled=True):
            self.stop("network_changed", "the network changed during the pass")
            return None
        self.next_index += 1
        return self.entries[self.next_index - 1]

    async def measure_logged(self, entry: TestListEntry, network_done: Callable[[], None]) -> None:
        try:
            await self.measure_one(entry, network_done)
        except Exception:  # a bug (network failures are data and never reach here): go on
            log.exception("measuring %s failed", entry.url)
            self.summary.errors += 1

    def storage_policy(self) -> tuple[StoragePolicy, FingerprintDB]:
        """What measurements keep, and the fingerprints whose evidence they keep whole: those the pass
        judges with (the collector's are the same shipped ones)."""
        if self._storage is None:
            db = (
                self.fingerprints
                if isinstance(self.fingerprints, FingerprintDB)
                else load_default_fingerprints()
            )
            self._storage = (
                StoragePolicy.for_fingerprints(db, keep_full_bodies=self.options.keep_full_bodies),
                db,
            )
        return self._storage

    def _network_changed(self, *, throttled: bool = False) -> bool:
        """Whether the machine's routes differ from the pass's start; ``throttled``: False without
        looking when they were looked at less than NETWORK_CHECK_INTERVAL ago."""
        if self.network is None:
            return False
        clock = time.monotonic()
        if throttled and clock - self.network_checked < NETWORK_CHECK_INTERVAL:
            return False
        self.network_checked = clock
        now = observe_network(self.collector_ip, self.options.source_address)
        return now.signature != self.network.signature

    async def measure_one(self, entry: TestListEntry, network_done: Callable[[], None] | None = None) -> None:
        started = utc_now()
        clock = time.monotonic()
        trace = Trace()
        # The control is asked for as soon as the probe has its addresses, and is measured by the
        # collector while the probe connects: a URL then costs the slower of the two, not their sum.
        asked: list[asyncio.Future[tuple[ControlObservations | None, str | None, VouchedControl | None]]] = []

        def ask_control(addresses: list[str]) -> None:
            if not asked:
                asked.append(asyncio.ensure_future(self.controls.ask(entry.url, addresses, self.identity)))

        try:
            keys = await self.measure(
                entry.url, self.config, trace=trace, on_resolved=ask_control, on_network_done=network_done
            )
            if not asked:  # no DNS step reported (a measure function without one): ask now
                ask_control(_answered_addresses(keys))
            control, control_failure, vouch = await asked[0]
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
            update={
                "control": control,
                "control_vouch": vouch,
                "control_failure": control_failure,
                "verdict": verdict,
            }
        )
        if self.options.packet_trace and verdict is not None and verdict.blocking:  # issue 17
            traces = await _packet_traces(entry.url, keys, control, self.options)
            keys = keys.model_copy(update={"packet_traces": traces})
        measurement = build_measurement(
            entry,
            keys,
            started=started,
            # Unlinkable mode: the pass's start would be shared by every batch of the pass and link them,
            # so each measurement gives its own start instead (issue 12).
            pass_started=self.pass_started if self.options.identified else started,
            runtime=time.monotonic() - clock,
            geolocation=self.geolocation,
            run_type=self.options.run_type,
        )
        policy, fingerprint_db = self.storage_policy()
        # DER bytes that minimising drops whatever scrubbing makes of them go first: never scanned.
        measurement = anonymise(without_validated_der(measurement, policy), self.identity)
        measurement = minimise(measurement, policy, fingerprint_db)
        if self.options.pseudonym_secret is not None:  # the volunteer's opt-in (agent/pseudonym.py)
            measurement = with_pseudonym(measurement, self.options.pseudonym_secret)
        payload = measurement.to_json_bytes()
        try:
            # Identified mode signs now with the long-term key; otherwise the batch signs (agent/batches.py).
            envelope = sign(payload, self.key) if self.options.identified else None
            self.writes.add(
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
            layer=interference_layer(verdict),
            fingerprint=fingerprint_label(verdict),
            control_failure=measurement.test_keys.control_failure,
        )
        s = self.summary
        s.add(result, verdict=verdict is not None)
        s.bytes_received += bytes_received(keys)
        self.emit("measured", result)
        if self.options.max_bytes is not None and s.bytes_received >= self.options.max_bytes:
            self.stop("byte_budget", f"{s.bytes_received} bytes received (budget {self.options.max_bytes})")

    async def _geolocate(self) -> Geolocation | ApiFailure:
        return await where_am_i(self.session, self.options.collector_bases)

    async def locate(self) -> bool:
        """Learn ASN/country and the addresses to scrub. False when the agent's public address cannot
        be learned and results would be uploaded: measuring then could publish it unscrubbed."""
        found = await self._geolocate()
        if isinstance(found, ApiFailure):
            if self.options.upload:
                self.stop("own_address_unknown", f"geolocate failed: {found}")
                return False
            found = WITHHELD
        probe_ip = usable_probe_ip(found.probe_ip, lab=self.options.lab)
        if probe_ip is None and self.options.upload:
            # Not the address our traffic leaves with (missing, garbled, or a proxy's private one): what
            # we would scrub is not what an echoing site would see.
            self.stop("own_address_unknown", "the collector gave no usable public address for this machine")
            return False
        self.geolocation = apply_overrides(found, self.options.probe_asn, self.options.probe_cc)
        self.summary.probe_asn = self.geolocation.probe_asn
        self.summary.probe_cc = self.geolocation.probe_cc
        # Toward the first host this machine connects to itself (a proxy, a front, the collector): never
        # the collector's name when a proxy resolves it (socks5h), so no DNS query for it leaves here.
        self.collector_ip = await first_address(first_hops(self.options.collector_bases))
        self.network = observe_network(self.collector_ip, self.options.source_address)
        self.identity = await own_identity(self.network, probe_ip, self.options, self.config.dns)
        return True

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
        source_address=options.source_address,
        ca_file=options.ca_file,
        limit=max(8, options.concurrency),
        route=options.route,
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
        batches = None if options.identified else await token_batches(options, queue, key, session)
        if options.identified:  # rows queued unsigned before a switch to identified mode
            queue.sign_unsigned(lambda payload: sign(payload, key))
        if await state.locate():
            with queue.one_sync(), fewer_collections():  # one fsync for the pass's measurements
                await _measure_all(state)
            if options.upload and state.summary.measurement_uids:
                await state.confirm_address()
        summary = state.summary
        summary.finished_at = format_utc(utc_now())
        state.emit("stopped", message=summary.stop_reason)
        if options.upload and options.collector_addresses and not options.defer_upload:
            state.emit("uploading")
            uploader = Uploader(
                queue,
                options.collector_addresses,
                session,
                batch_size=options.upload_batch,
                policy=options.upload_retry,
                batches=batches,
                only=summary.measurement_uids if options.confirmation else None,
            )
            summary.upload = await uploader.upload_pending()
            state.emit("uploaded", message=summary.upload.last_error)
        queue.set_meta(LAST_RUN_KEY, summary.as_record())
        return summary
    finally:
        if own_session:
            await session.close()


async def token_batches(
    options: RunOptions, queue: MeasurementQueue, key: Ed25519PrivateKey, session: HttpClient
) -> TokenBatches:
    """The wallet, topped up now, before measuring: issuance and the uploads that spend its tokens are
    then a pass apart (agent/tokens.py). A failure is logged; the upload then uses what the wallet holds.
    A confirmation pass fetches none: it uploads seconds after it starts."""
    wallet = TokenWallet(queue)
    if options.upload and options.collector_addresses and not options.confirmation:
        try:
            added = await wallet.top_up(
                session,
                options.collector_addresses,
                key,
                options.token_policy,
                invite_code=options.invite_code,
                pow_bits=options.proof_of_work_bits,
            )
            if added:
                log.info("fetched %d tokens", added)
        except WalletError as exc:
            log.warning("could not fetch tokens: %s", exc)
    return TokenBatches(queue, wallet)


async def _measure_all(state: _Pass) -> None:
    options = state.options
    pacer = Pacer(
        state.next_entry,
        state.measure_logged,
        concurrency=options.concurrency,
        per_host=options.per_host,
    )
    try:
        if not await pacer.run(options.max_runtime):
            state.stop("time_budget", f"{options.max_runtime:g} s elapsed")
    except asyncio.CancelledError:
        state.stop("interrupted")
        raise
    finally:
        state.writes.flush()  # before anything reads the queue: the pass's measurements are all in it
        await state.controls.close()

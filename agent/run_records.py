"""The records of a pass: what it is asked to do (:class:`RunOptions`), what it tells as it goes
(:class:`RunEvent`), what it found for each URL (:class:`UrlResult`) and what it did (:class:`RunSummary`).
The pass itself is :mod:`gatewatch.agent.runner`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.probes.config import DNSConfig, TCPConfig, TLSConfig, WebConfig

from .addresses import CollectorAddress, Fallbacks, as_address, as_addresses
from .http_client import DIRECT
from .netinfo import ROUTE_PROBES
from .proxy import Route
from .settings import AgentSettings
from .tokens import TopUpPolicy
from .upload import RetryPolicy, UploadReport

__all__ = [
    "LAST_RUN_KEY",
    "SUMMARY_ROWS",
    "RunEvent",
    "RunOptions",
    "RunSummary",
    "StopReason",
    "UrlResult",
]

LAST_RUN_KEY = "last_run"  # the queue's meta key under which the last pass's record is kept for `status`
SUMMARY_ROWS = 200  # per kind of result: what the summary table at the end of a pass can show

StopReason = Literal[
    "time_budget", "byte_budget", "queue_full", "network_changed", "own_address_unknown", "interrupted"
]


@dataclass(frozen=True)
class RunOptions:
    collector_urls: tuple[str, ...] = ()
    control_url: str | None = None
    # Typed collector addresses (settings.collector_addresses()): when given, they replace collector_urls.
    addresses: tuple[CollectorAddress, ...] = ()
    control: CollectorAddress | None = None  # replaces control_url when given
    route: Route = DIRECT  # how collector calls to a plain URL go (the global proxy or Tor)
    probe_asn: str | None = None  # override (WITHHELD_ASN withholds)
    probe_cc: str | None = None  # override (WITHHELD_CC withholds)
    resolver: str | None = None
    ca_file: str | None = None
    source_address: str | None = None  # lab: bind probes and the agent's own HTTP client here
    routable: tuple[str, ...] = ()  # lab: CIDRs not to treat as bogons
    # The privileged packet-level trace of interfered flows (needs CAP_NET_RAW; skipped and said so without).
    packet_trace: bool = False
    trace_control_domain: str | None = None  # the name traced as the control (default: example.com)
    concurrency: int = 8
    per_host: int = 2
    max_runtime: float | None = 3600.0
    max_bytes: int | None = None
    upload: bool = True
    defer_upload: bool = False  # queue for upload but leave the upload to the caller (the daemon's delay)
    # A confirmation pass (the collector asked this country's agents to measure a few URLs now): it uploads
    # only its own measurements, at once (the rest keeps its delay), and fetches no tokens (issuance and
    # the uploads that spend them stay a pass apart).
    confirmation: bool = False
    upload_batch: int = 50
    ipv6: bool = True  # False: DNS is asked for A records only
    upload_retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Issue 12: False (the default) signs each upload batch with its own ephemeral key and a blind token;
    # True signs with the long-term key, for operator-run probes that want to be identified.
    identified: bool = False
    token_policy: TopUpPolicy = field(default_factory=TopUpPolicy)
    invite_code: str | None = None
    proof_of_work_bits: int = 0
    # The optional network pseudonym's secret (agent/pseudonym.py); None: no pseudonym (the default).
    pseudonym_secret: bytes | None = field(default=None, repr=False)
    run_type: Literal["manual", "timed"] = "manual"
    keep_full_bodies: bool = False  # the volunteer's opt-in (agent.toml): see agent/minimise.py
    # Public addresses whose route (never a packet) tells the machine's own source addresses.
    route_probes: tuple[str, ...] = ROUTE_PROBES

    @classmethod
    def from_settings(cls, settings: AgentSettings, **flags: Any) -> RunOptions:
        """The options a pass takes from ``agent.toml`` (the same for ``run``, ``daemon`` and the local
        web page), with the command line's ``flags``; ``upload=False`` there wins over the file."""
        wanted = bool(flags.pop("upload", True))
        upload = settings.upload and wanted
        return cls(
            collector_urls=tuple(settings.collector_urls),
            control_url=settings.control_url,
            addresses=tuple(settings.collector_addresses()),
            control=settings.control_address(),
            route=settings.default_route(),
            probe_asn=settings.probe_asn,
            probe_cc=settings.probe_cc,
            concurrency=settings.concurrency,
            per_host=settings.per_host_concurrency,
            max_runtime=settings.max_runtime,
            max_bytes=settings.max_bytes,
            upload_batch=settings.upload_batch,
            ipv6=settings.ipv6,
            keep_full_bodies=settings.keep_full_bodies,
            upload=upload,
            identified=settings.identified,
            token_policy=TopUpPolicy(settings.tokens.low, max(settings.tokens.low, settings.tokens.high)),
            invite_code=settings.tokens.invite_code,
            proof_of_work_bits=settings.tokens.proof_of_work_bits,
            **flags,
        )

    @property
    def lab(self) -> bool:
        """A lab run: the agent is bound to, or routes to, addresses that are not public."""
        return bool(self.source_address or self.routable)

    def web_config(self) -> WebConfig:
        return WebConfig(
            dns=DNSConfig(
                resolver=self.resolver,
                source_address=self.source_address,
                routable=self.routable,
                query_types=("A", "AAAA") if self.ipv6 else ("A",),
            ),
            tcp=TCPConfig(source_address=self.source_address),
            tls=TLSConfig(ca_file=self.ca_file),
        )

    @property
    def collector_addresses(self) -> list[CollectorAddress]:
        """Where uploads go, in the order tried."""
        return list(self.addresses) or as_addresses(self.collector_urls)

    @property
    def control_address(self) -> CollectorAddress | Fallbacks | None:
        """Where controls are asked: the control address, else the collector addresses in turn (by the
        same routes and fallbacks as uploads)."""
        if self.control is not None:
            return self.control
        if self.control_url:
            return as_address(self.control_url)
        addresses = self.collector_addresses
        return Fallbacks(addresses) if addresses else None

    @property
    def collector_bases(self) -> list[CollectorAddress]:
        """Every collector this pass may ask where it is: the upload addresses, then the control's."""
        bases = self.collector_addresses
        control = self.control_address
        if isinstance(control, CollectorAddress) and control not in bases:
            bases.append(control)
        return bases


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

"""The agent's configuration: ``agent.toml`` in the data directory, overridden by command-line flags.

Example::

    collector_urls = ["https://collector.example.org/", "https://mirror.example.net/"]
    control_url = "https://collector.example.org/"   # defaults to the first collector
    probe_asn = "AS64501"                            # set the network by hand (or withhold it, below)
    skip_categories = ["LGBT", "POLR"]               # riskier categories where you live
    max_runtime = 1800
    upload = true                                    # false: keep every result on this machine
    ipv6 = true                                      # false: ask DNS for IPv4 addresses only
    keep_full_bodies = false                         # see below: off unless you accept the risk

    [queue]
    max_unsent = 20000

How the agent reaches the collector (its own calls only: the probes never use a proxy)::

    tor = true                        # SOCKS5h to the local Tor (tor_socks), a fresh circuit per upload
    # proxy = "socks5h://127.0.0.1:1080"  # or a proxy of your own: socks5h://, socks5:// or http://
    upload_delay = [300, 3600]        # the daemon waits this many seconds (at random) before uploading

    [[collectors]]                    # tried in order, before collector_urls
    url = "http://gatewatchexampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion/"
    [[collectors]]
    url = "https://collector.example.org/"
    front = "cdn.example.net"         # connect to (and name in TLS) the CDN; Host: is the collector
    proxy = "direct"                  # this one never through Tor or the proxy

``probe_asn = "AS0"`` and ``probe_cc = "ZZ"`` (OONI's withheld values, ``WITHHELD_ASN`` and ``WITHHELD_CC`` of
:mod:`gatewatch.core.vocabulary`) withhold the network and country.
``keep_full_bodies = true`` keeps every web page the agent downloads (scrubbed of your addresses) instead
of only the pages that look like blockpages: researchers learn more, but a page can carry something that
names you in a form no scrubber knows (a token, a login name, your address in an unusual encoding). Turn it
on only on a network where you accept that; each measurement says which policy it was made under
(``docs/privacy.md``), and every pass with it on says so when it starts.
Unknown keys are refused with a message naming them: a typo must not silently disable a privacy
choice such as ``skip_categories``.
"""

# No ``from __future__ import annotations``: pydantic reads every field's annotation when a model class is
# made, and one kept as text is compiled and evaluated first (issue 16: part of every agent's start).

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatewatch.core.measurement import ASN, CountryCode

from .addresses import CollectorAddress
from .proxy import TOR_DEFAULT, Route, parse_proxy

__all__ = [
    "DEFAULT_UPLOAD_DELAY",
    "FULL_BODIES_WARNING",
    "AgentSettings",
    "DaemonSettings",
    "QueueSettings",
    "SettingsError",
    "TokenSettings",
    "load_settings",
]

FULL_BODIES_WARNING = (
    "keep_full_bodies is on: every web page this agent downloads is kept and uploaded whole (scrubbed of "
    "your addresses), not only pages that look like blockpages. A page may name you in a way no scrubber "
    "recognises. Set keep_full_bodies = false in agent.toml unless you accept that on this network."
)


class SettingsError(ValueError):
    """The settings file cannot be used (the volunteer's fault: shown to them, never a traceback)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(_Section):
    # Unsent measurements are never dropped; past this many the agent stops measuring and says why.
    max_unsent: int = Field(default=20_000, ge=1)
    # Delivered ones are kept for `results` and pruned, oldest first, past either bound.
    max_sent: int = Field(default=5_000, ge=0)
    max_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)


class DaemonSettings(_Section):
    interval: float = Field(default=6 * 3600, gt=0)  # seconds between passes
    jitter: float = Field(default=1800, ge=0)  # up to this much added at random, so agents do not align
    # A pass is spread over its interval in this many slices (one every interval / slices): the same load.
    slices: int = Field(default=72, ge=1, le=1000)
    # Measure the collector's confirmation requests (URLs that just showed an anomaly in the country) at
    # once, at most this many URLs an hour; 0 turns them off.
    confirm_per_hour: int = Field(default=30, ge=0, le=600)
    # Ask for confirmation requests about this often (seconds, plus or minus a quarter at random).
    confirm_poll: float = Field(default=60.0, ge=1, le=3600)
    # After a pass that found anomalies, tell the collector which test-list URLs looked anomalous (nothing
    # else: no measurement, no key, no network), with the next confirmation poll, so that the country's
    # agents confirm them at once while this pass's uploads keep their delay (agent/sightings.py).
    sightings: bool = True


# The daemon's wait between a pass and its upload (seconds, drawn at random in the range): the gateway sees
# the probes' traffic and, later, an upload; the two are not adjacent. Confirmations may need it sooner:
# an hour at most by default, the alert latency the detection issue allows.
DEFAULT_UPLOAD_DELAY = (300.0, 3600.0)


class TokenSettings(_Section):
    # Keep between low and high unspent tokens: below low, fetch a random number up to high.
    low: int = Field(default=4, ge=1, le=1000)
    high: int = Field(default=16, ge=1, le=1000)
    # What the collector asks of a new key, when it does (its operator says which).
    invite_code: str | None = None
    proof_of_work_bits: int = Field(default=0, ge=0, le=32)


class AgentSettings(_Section):
    collector_urls: list[str] = Field(default_factory=list)
    collectors: list[CollectorAddress] = Field(default_factory=list)  # typed addresses, tried first
    proxy: str | None = None  # every address without a proxy of its own goes through this one
    tor: bool = False  # SOCKS5h to tor_socks, with a Tor circuit of its own per upload
    tor_socks: str = TOR_DEFAULT
    upload_delay: tuple[float, float] = DEFAULT_UPLOAD_DELAY
    control_url: str | None = None
    test_list_cc: str | None = None  # fetch the collector's list for this country when no input is given
    probe_asn: ASN | None = None
    probe_cc: CountryCode | None = None
    include_categories: list[str] = Field(default_factory=list)
    skip_categories: list[str] = Field(default_factory=list)
    concurrency: int = Field(default=8, ge=1, le=256)
    per_host_concurrency: int = Field(default=2, ge=1, le=64)
    max_runtime: float | None = Field(default=3600, gt=0)
    max_bytes: int | None = Field(default=None, gt=0)
    upload_batch: int = Field(default=50, ge=1, le=1000)
    upload: bool = True  # False: results stay on this machine (as `run --no-upload`, for every pass)
    ipv6: bool = True  # False: DNS is asked for IPv4 addresses only, so nothing is measured over IPv6
    keep_full_bodies: bool = False  # the researchers' opt-in (docs/privacy.md); off by default
    # Issue 12. False (the default): each upload batch is signed by a key of its own, certified by a blind
    # token, so no one can link batches to each other or to this agent. True: sign with the long-term key
    # (only for operator-run probes that want to be identified; the collector must accept them).
    identified: bool = False
    # Off by default: a pseudonym per (network, week) on every measurement, so that operators can count
    # distinct volunteers per network; it links this agent's batches within one network and week.
    network_pseudonym: bool = False
    tokens: TokenSettings = Field(default_factory=lambda: TokenSettings())
    queue: QueueSettings = Field(default_factory=QueueSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)

    @field_validator("collector_urls", "control_url", mode="after")
    @classmethod
    def _http_urls(cls, value: list[str] | str | None) -> list[str] | str | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None:
            parse_proxy(value)  # a ValueError with a sentence for the volunteer
        return value

    @field_validator("upload_delay")
    @classmethod
    def _delay_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high:
            raise ValueError("give [min, max] seconds with 0 <= min <= max")
        return value

    @model_validator(mode="after")
    def _routes(self) -> "AgentSettings":
        if self.tor and self.proxy:
            raise ValueError("set either tor = true or a proxy, not both")
        parse_proxy(f"socks5h://{self.tor_socks}")
        self.collector_addresses()  # a .onion address without Tor is refused here, with its sentence
        self.control_address()
        return self

    @property
    def _default_route(self) -> tuple[str | None, bool]:
        if self.tor:
            return f"socks5h://{self.tor_socks}", True
        return self.proxy, False

    def default_route(self) -> Route:
        """How a collector call to a plain URL goes: through Tor, the proxy, or directly."""
        proxy, isolate = self._default_route
        return CollectorAddress(url="http://collector.invalid/", proxy=proxy, isolate=isolate).route

    def collector_addresses(self) -> list[CollectorAddress]:
        """Every way to the collector, in the order tried: ``collectors``, then ``collector_urls``; each
        without a proxy of its own goes through Tor or the proxy when one is set."""
        proxy, isolate = self._default_route
        listed = [*self.collectors, *(CollectorAddress(url=url) for url in self.collector_urls)]
        return [address.with_default_route(proxy, isolate).check_reachable() for address in listed]

    def control_address(self) -> CollectorAddress | None:
        """Where controls are asked: ``control_url`` by the same route rules, else None (the address that
        answered the pass's first call)."""
        if self.control_url is None:
            return None
        return (
            CollectorAddress(url=self.control_url).with_default_route(*self._default_route).check_reachable()
        )

    @field_validator("include_categories", "skip_categories", mode="after")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [code.strip().upper() for code in value if code.strip()]

    @property
    def effective_control_url(self) -> str | None:
        addresses = self.collector_addresses()
        return self.control_url or (addresses[0].url if addresses else None)

    def with_transport(
        self, proxy: str | None = None, tor: bool = False, upload_delay: str | None = None
    ) -> "AgentSettings":
        """The command line's ``--proxy``/``--tor`` (each replaces the other's setting) and
        ``--upload-delay MIN[,MAX]`` (seconds)."""
        changes: dict[str, object] = {}
        if tor:
            changes |= {"tor": True, "proxy": None}
        elif proxy is not None:
            changes |= {"tor": False, "proxy": proxy}
        if upload_delay is not None:
            try:
                low, _, high = upload_delay.partition(",")
                changes["upload_delay"] = (float(low), float(high or low))
            except ValueError:
                raise SettingsError(f"--upload-delay {upload_delay!r}: give MIN[,MAX] seconds") from None
        if not changes:
            return self
        try:
            return AgentSettings.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    def with_overrides(self, **changes: object) -> "AgentSettings":
        """A copy with the given values (``None`` and empty lists mean "not given on the command line")."""
        given = {k: v for k, v in changes.items() if v is not None and v != [] and v != ()}
        try:
            return AgentSettings.model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())


def load_settings(path: Path) -> AgentSettings:
    """Read ``agent.toml``; a missing file means the defaults."""
    if not path.exists():
        return AgentSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    try:
        return AgentSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{path}: {_explain(exc)}") from None

"""Scenario files: which lab domains exist, what the censor does to each, where, and what a probe should find.

A scenario is TOML with an optional ``name``/``description``, optional lab-wide settings, and one
``[[domain]]`` table per domain:

    latency_ms = 20                   # every lab server waits this long before answering (default 0)
    wildcard = true                   # names not listed resolve to clean lab sites (default false)

    [[domain]]
    name = "isp-blockpage.lab"
    scheme = "http"                   # http | https, or both: ["http", "https"] (one URL each)
    behaviours = ["http_blockpage"]   # see BEHAVIOURS
    networks = ["isp-a"]              # "all" (every censored network: gateway-level) or a list (ISP-level)
    blocking = "http-diff"            # expected web_connectivity `blocking` in the affected networks
    expected_scope = "isp"            # gateway | isp | none (derived when omitted)
    exists = true                     # false: NXDOMAIN for everyone, the probe and the control alike
    switched_on = true                # false: the censor starts idle; Lab.switch(name, True) turns it on

``blocking`` may also be a table per network (``{ isp-a = "http-diff" }``); networks a behaviour does not
apply to, and the clean vantage, always expect ``false``. A domain measured over both schemes expects
``blocking`` only on the URLs some behaviour can act on: ``http_blockpage`` acts on cleartext only and
``tls_reset`` on a ClientHello only, so with one of them alone the other scheme's URL expects ``false``
(the gateway filtering Host headers while HTTPS to the same host works, or SNI while http:// works).
``expected_scope`` is the domain's: interfered with when any of its URLs is. Loading validates everything
and raises ``ScenarioError`` naming the file, the domain and the problem.

``latency_ms`` emulates distance: the resolver delays each reply, and each web server delays the first byte
after accepting, the TLS handshake and the HTTP response by that much, so a measurement through the lab
takes a known number of round trips (DNS 1, TCP 1, TLS 1, HTTP 1). ``wildcard`` lets a real test list run
through the lab: a name that is not a scenario domain resolves to one of a few clean sites, which serve it
a clean page over http and https (its certificate issued on demand by the lab CA).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from gatewatch.core.vocabulary import BLOCKING_LAYERS, SCOPES

from .networks import CENSORED_NETWORKS, CLEAN, NETWORKS

__all__ = [
    "BEHAVIOURS",
    "MAX_LATENCY_MS",
    "BLOCKING_VALUES",
    "BlockSwitch",
    "CENSORING_BEHAVIOURS",
    "EXPECTED_SCOPES",
    "DomainSpec",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
]

CENSORING_BEHAVIOURS: tuple[str, ...] = (
    "dns_injection",
    "resolver_nxdomain",
    "resolver_bogus_ip",
    "tls_reset",
    "http_blockpage",
    "blackhole",
)
# echo_client is not censorship: it exists so privacy tests can see what an agent would leak.
BEHAVIOURS: tuple[str, ...] = (*CENSORING_BEHAVIOURS, "echo_client")
# What a scenario may expect of a measurement: not blocked, or blocked at a layer (never ``None``: a lab
# control always answers, so every verdict is decided).
BLOCKING_VALUES: tuple[object, ...] = (False, *BLOCKING_LAYERS)
# What a scenario may expect of the attribution: every scope but too few measurements to decide (the lab's
# networks are always measured).
EXPECTED_SCOPES: tuple[str, ...] = tuple(scope for scope in SCOPES if scope != "insufficient-data")
SCHEMES: tuple[str, ...] = ("http", "https")
# A behaviour that only makes sense on one scheme: a cleartext blockpage cannot be injected into TLS,
# and an SNI-triggered reset needs a ClientHello.
_SCHEME_OF_BEHAVIOUR = {"tls_reset": "https", "http_blockpage": "http"}

_DOMAIN_KEYS = {
    "name",
    "scheme",
    "behaviours",
    "networks",
    "blocking",
    "expected_scope",
    "exists",
    "notes",
    "switched_on",
}
_TOP_KEYS = {"name", "description", "domain", "latency_ms", "wildcard"}
# Beyond this a typo (seconds written as milliseconds) would stall every test that uses the scenario.
MAX_LATENCY_MS = 2000.0
_PACKAGED_NAME = re.compile(r"^[a-z0-9_-]+$")  # "default", not a path
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class ScenarioError(ValueError):
    """A scenario file is malformed; the message says where and why."""


@dataclass
class BlockSwitch:
    """Whether a domain's censor acts now (a block switched on or off while the lab runs)."""

    on: bool


@dataclass(frozen=True)
class DomainSpec:
    name: str
    scheme: str  # the first (or only) scheme it is measured with
    behaviours: tuple[str, ...]
    networks: tuple[str, ...]  # the networks the behaviours apply to ("all" already expanded)
    blocking: dict[str, object]  # expected `blocking` for every lab network, clean included
    expected_scope: str
    exists: bool = True
    notes: str = ""
    also: tuple[str, ...] = ()  # further schemes it is measured with (one URL per scheme)
    # Whether its censoring behaviours act now: switched at run time (Lab.switch), so it is state shared by
    # every server that reads this spec, and not part of the spec's equality.
    switch: BlockSwitch = field(default_factory=lambda: BlockSwitch(True), compare=False, repr=False)

    @property
    def schemes(self) -> tuple[str, ...]:
        return (self.scheme, *self.also)

    def expected(self, network: str, scheme: str | None = None) -> object:
        """The ``blocking`` expected from ``network`` for this domain's URL of ``scheme`` (default: its
        first): ``false`` when none of its censoring behaviours can act on that scheme."""
        scheme = scheme or self.scheme
        acting = [
            b
            for b in self.behaviours
            if b in CENSORING_BEHAVIOURS and _SCHEME_OF_BEHAVIOUR.get(b, scheme) == scheme
        ]
        return self.blocking[network] if acting else False

    def applies(self, behaviour: str, network: str | None) -> bool:
        """True when ``behaviour`` is switched on for clients of ``network``."""
        if behaviour in CENSORING_BEHAVIOURS and not self.switch.on:
            return False
        return network is not None and behaviour in self.behaviours and network in self.networks


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    domains: tuple[DomainSpec, ...]
    origin: str = "<string>"
    latency_ms: float = 0.0
    wildcard: bool = False

    def domain(self, name: str) -> DomainSpec:
        wanted = name.lower().rstrip(".")
        for spec in self.domains:
            if spec.name == wanted:
                return spec
        raise KeyError(f"{name!r} is not a domain of scenario {self.name!r}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(d.name == name.lower().rstrip(".") for d in self.domains)

    @property
    def latency(self) -> float:
        """``latency_ms`` in seconds, as asyncio wants it."""
        return self.latency_ms / 1000

    def with_settings(self, *, latency_ms: float | None = None, wildcard: bool | None = None) -> Scenario:
        """This scenario with lab-wide settings overridden (None keeps the scenario's own)."""
        where = f"scenario {self.origin}"
        return replace(
            self,
            latency_ms=self.latency_ms if latency_ms is None else _latency(latency_ms, where),
            wildcard=self.wildcard if wildcard is None else _flag(wildcard, f"{where}: wildcard"),
        )


def load_scenario(source: Scenario | str | Path = "default") -> Scenario:
    """A scenario by packaged name (``"default"``), by path, or passed through if already loaded."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, str) and _PACKAGED_NAME.match(source):
        packaged = resources.files(__package__).joinpath("scenarios", f"{source}.toml")
        if packaged.is_file():
            return parse_scenario(packaged.read_text(encoding="utf-8"), origin=f"packaged:{source}")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"scenario {str(source)!r}: cannot read it ({exc.strerror or exc})") from exc
    return parse_scenario(text, origin=str(path))


def parse_scenario(text: str, origin: str = "<string>") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {origin}: not valid TOML: {exc}") from exc
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"scenario {origin}: unknown top-level key(s) {sorted(unknown)}")
    tables = raw.get("domain")
    if not isinstance(tables, list) or not tables:
        raise ScenarioError(f"scenario {origin}: needs at least one [[domain]] table")
    domains: list[DomainSpec] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = f"scenario {origin}: domain[{index}]"
        if not isinstance(table, dict):
            raise ScenarioError(f"{where}: must be a table")
        spec = _parse_domain(table, where)
        if spec.name in seen:
            raise ScenarioError(f"{where} {spec.name!r}: defined twice")
        seen.add(spec.name)
        domains.append(spec)
    _check_whoami_names(domains, origin)
    return Scenario(
        name=_string(raw.get("name", Path(origin).stem), f"scenario {origin}: name"),
        description=_string(raw.get("description", ""), f"scenario {origin}: description"),
        domains=tuple(domains),
        origin=origin,
        latency_ms=_latency(raw.get("latency_ms", 0.0), f"scenario {origin}"),
        wildcard=_flag(raw.get("wildcard", False), f"scenario {origin}: wildcard"),
    )


def _latency(value: object, where: str) -> float:
    # bool is an int: `latency_ms = true` must not quietly mean 1 ms.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: latency_ms must be a number of milliseconds")
    if not 0 <= value <= MAX_LATENCY_MS:
        raise ScenarioError(f"{where}: latency_ms {value!r} is outside 0..{MAX_LATENCY_MS:g}")
    return float(value)


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: must be true or false")
    return value


def _parse_domain(table: dict[str, Any], where: str) -> DomainSpec:
    unknown = set(table) - _DOMAIN_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(_DOMAIN_KEYS)})")
    if "name" not in table:
        raise ScenarioError(f"{where}: missing 'name'")
    name = _string(table["name"], f"{where}: name").lower()
    if not _HOSTNAME.match(name):
        raise ScenarioError(f"{where}: {name!r} is not a hostname")
    where = f"{where} {name!r}"
    schemes = _schemes(table, where)
    behaviours = _behaviours(table.get("behaviours", []), where)
    for behaviour, needed in _SCHEME_OF_BEHAVIOUR.items():
        if behaviour in behaviours and needed not in schemes:
            raise ScenarioError(
                f"{where}: behaviour {behaviour!r} needs scheme {needed!r}, not {', '.join(schemes)!r}"
            )
    networks = _networks(table.get("networks", "all"), where)
    if not behaviours:
        networks = ()  # validated above, but nothing applies anywhere
    censoring = [b for b in behaviours if b in CENSORING_BEHAVIOURS]
    if censoring and CLEAN in networks:
        raise ScenarioError(f"{where}: {CLEAN!r} is the control vantage; it cannot be censored ({censoring})")
    exists = table.get("exists", True)
    if not isinstance(exists, bool):
        raise ScenarioError(f"{where}: 'exists' must be true or false")
    if not exists and behaviours:
        raise ScenarioError(
            f"{where}: a domain that does not exist cannot have behaviours {list(behaviours)}"
        )
    affected = networks if censoring else ()
    blocking = _blocking(table.get("blocking", False), affected, where)
    scope = table.get("expected_scope", _derived_scope(table.get("networks", "all"), bool(censoring)))
    if scope not in EXPECTED_SCOPES:
        raise ScenarioError(f"{where}: expected_scope {scope!r} is not one of {list(EXPECTED_SCOPES)}")
    return DomainSpec(
        name=name,
        scheme=schemes[0],
        also=schemes[1:],
        behaviours=behaviours,
        networks=networks,
        blocking=blocking,
        expected_scope=scope,
        exists=exists,
        notes=_string(table.get("notes", ""), f"{where}: notes"),
        switch=BlockSwitch(_switched_on(table, behaviours, where)),
    )


def _schemes(table: dict[str, Any], where: str) -> tuple[str, ...]:
    if "scheme" not in table:
        raise ScenarioError(f"{where}: missing 'scheme' (one of {list(SCHEMES)}, or a list of them)")
    value = table["scheme"]
    schemes = value if isinstance(value, list) else [value]
    if not schemes or len(set(map(str, schemes))) != len(schemes):
        raise ScenarioError(f"{where}: scheme must be one of {list(SCHEMES)} or a list of them, each once")
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ScenarioError(f"{where}: scheme {scheme!r} is not one of {list(SCHEMES)}")
    return tuple(schemes)


def _switched_on(table: dict[str, Any], behaviours: tuple[str, ...], where: str) -> bool:
    on = _flag(table.get("switched_on", True), f"{where}: switched_on")
    if not on and "blackhole" in behaviours:
        raise ScenarioError(f"{where}: blackhole is set up when the lab starts; it cannot start switched off")
    return on


def _behaviours(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        raise ScenarioError(f"{where}: 'behaviours' must be a list of strings")
    for behaviour in value:
        if behaviour not in BEHAVIOURS:
            raise ScenarioError(f"{where}: unknown behaviour {behaviour!r} (known: {list(BEHAVIOURS)})")
    if len(set(value)) != len(value):
        raise ScenarioError(f"{where}: a behaviour is listed twice")
    return tuple(value)


def _networks(value: object, where: str) -> tuple[str, ...]:
    if value == "all":
        return CENSORED_NETWORKS
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        raise ScenarioError(f"{where}: 'networks' must be \"all\" or a non-empty list of network names")
    for network in value:
        if network not in NETWORKS:
            raise ScenarioError(f"{where}: unknown network {network!r} (known: {list(NETWORKS)})")
    if len(set(value)) != len(value):
        raise ScenarioError(f"{where}: a network is listed twice")
    return tuple(value)


def _blocking(value: object, affected: tuple[str, ...], where: str) -> dict[str, object]:
    expected: dict[str, object] = dict.fromkeys(NETWORKS, False)
    if isinstance(value, dict):
        for network, per_network in value.items():
            if network not in NETWORKS:
                raise ScenarioError(f"{where}: blocking names unknown network {network!r}")
            _check_blocking_value(per_network, where)
            if per_network is not False and network not in affected:
                raise ScenarioError(
                    f"{where}: blocking for {network!r} is {per_network!r}, but no censoring behaviour "
                    "applies to that network: it must be false"
                )
            expected[network] = per_network
        return expected
    _check_blocking_value(value, where)
    if value is not False and not affected:
        raise ScenarioError(f"{where}: blocking is {value!r} but no censoring behaviour applies anywhere")
    for network in affected:
        expected[network] = value
    return expected


def _check_blocking_value(value: object, where: str) -> None:
    # `is` rather than `in`: TOML `true` would compare equal to nothing here, but 0/1 must not sneak in.
    if not any(value is v or (isinstance(v, str) and value == v) for v in BLOCKING_VALUES):
        raise ScenarioError(f"{where}: blocking {value!r} is not one of {list(BLOCKING_VALUES)}")


def _derived_scope(networks: object, censoring: bool) -> str:
    if not censoring:
        return "none"
    return "gateway" if networks == "all" else "isp"


def _check_whoami_names(domains: list[DomainSpec], origin: str) -> None:
    # The resolver answers whoami.<echo domain> itself; a scenario domain of that name would be shadowed.
    names = {d.name for d in domains}
    for spec in domains:
        if "echo_client" in spec.behaviours and f"whoami.{spec.name}" in names:
            raise ScenarioError(f"scenario {origin}: whoami.{spec.name} is reserved for echo_client")


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: must be a string")
    return value

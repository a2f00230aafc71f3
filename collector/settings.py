"""The collector's settings, from flags, the environment (``GATEWATCH_*``) and a TOML file.

Precedence: flags > environment > file > defaults. Every field of :class:`Settings` can come from each
source under the same name (``max_batch`` is ``--max-batch``, ``GATEWATCH_MAX_BATCH`` and ``max_batch =``
in the file), so adding a setting is adding a field. A list in the environment is separated like PATH
when it holds paths (``GATEWATCH_ASN_DB=a.csv:b.csv``) and by commas otherwise
(``GATEWATCH_CONTROL_ALLOW_NET=127.0.0.0/8,::1/128``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewatch.core.vocabulary import ENROLMENT_INVITE, ENROLMENT_OPEN, ENROLMENT_POLICIES

__all__ = [
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_listen",
    "parse_resolver",
    "parse_test_lists",
]

ENV_PREFIX = "GATEWATCH_"
# The collector's one default port. Every shipped deployment file uses it (the Prometheus targets, the
# systemd unit, the compose file, the Dockerfile): tests/deploy/test_ports.py checks they agree.
DEFAULT_PORT = 8080


class SettingsError(ValueError):
    """A setting has a value the collector cannot use (the operator's fault; names the setting)."""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into its parts; port 0 lets the system choose."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"listen: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_resolver(value: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[V6]:PORT`` (the control's resolver is an address, never a name)."""
    host, port = value, 53
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise SettingsError(f"control_resolver: expected IP[:PORT], got {value!r}")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        port_text = ""  # a bare IPv4 or IPv6 address
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise SettingsError(f"control_resolver: bad port in {value!r}")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(f"control_resolver: expected IP[:PORT], got {value!r}") from None
    return host, port


_TEST_LIST_CC = re.compile(r"^(?:[A-Za-z]{2}|global)$")


def parse_test_lists(entries: tuple[str, ...]) -> dict[str, Path]:
    """``("KH=kh.csv", "global=g.csv")`` into ``{"KH": Path("kh.csv"), "global": ...}``; one file per key."""
    files: dict[str, Path] = {}
    for entry in entries:
        cc, sep, path = entry.partition("=")
        cc = cc.strip()
        if not sep or not path or not _TEST_LIST_CC.match(cc):
            raise SettingsError(f"test_list: expected CC=FILE or global=FILE, got {entry!r}")
        key = "global" if cc.lower() == "global" else cc.upper()
        if key in files:
            raise SettingsError(f"test_list: {key} is given twice")
        files[key] = Path(path)
    return files


_MAX_TIME_WINDOW = 100 * 366 * 24 * 3600.0
_MAX_METRICS_INTERVAL = 1.0
_MAX_CHECK_PROCESSES = 64


@dataclass(frozen=True)
class Settings:
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    db: str = "sqlite:///gatewatch.db"
    asn_db: tuple[Path, ...] = ()
    country_db: tuple[Path, ...] = ()
    # Ingest limits. A full batch of 100 typical measurements is well under a megabyte.
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 100
    # Slow or stalled clients: a connection's request head (and an idle keep-alive connection) must arrive
    # within header_timeout_seconds, an upload's body within body_timeout_seconds; at most
    # max_concurrent_uploads uploads are read and judged at once per process (the rest: 503 + Retry-After).
    header_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 60.0
    max_concurrent_uploads: int = 32
    # Each API export is a child process (export_process.py): at most this many at once per collector
    # process, the rest 503 + Retry-After (a researcher's script retries; nobody can fork the host to death).
    max_concurrent_exports: int = 2
    # Worker processes that verify and judge uploads beside the collector process (ingest_processes.py):
    # 0 none (threads of this process; measured faster on a shared 2-core machine), -1 one per core (at
    # most 4; none on a one-core machine), N exactly N.
    check_processes: int = 0
    # Per-public-key token bucket: sustained requests per second, burst, and how many keys are remembered.
    key_rate: float = 1.0
    key_burst: int = 30
    rate_limit_keys: int = 100_000
    # Sanity of measurement_start_time: clocks drift a little; agents queue results while offline.
    max_future_seconds: float = 3600.0
    max_age_seconds: float = 30 * 24 * 3600.0
    # /metrics answers at least this many seconds apart (collector/scrape_pacer.py): a client scraping back
    # to back cannot slow ingest; Prometheus scrapes every few seconds at most. 0: no pacing.
    metrics_min_interval_seconds: float = 0.1
    # How long a stopping collector lets in-flight requests finish.
    shutdown_timeout: float = 30.0
    log_level: str = "INFO"
    # Load balancers / reverse proxies (CIDRs) whose X-Forwarded-For or Forwarded header names the client.
    # Empty: the connection's own address is the client; those headers are ignored (anyone can send one).
    trusted_proxies: tuple[str, ...] = ()
    # The control (POST /api/v1/control): its own probes' resolver ("" = the system's, else IP[:PORT]) and
    # CA file ("" = the system's roots), ranges it may reach although not public (test labs only), how long
    # an answer is reused, how many run at once, and one global budget of new measurements per second.
    control_resolver: str = ""
    ca_file: str = ""
    control_allow_net: tuple[str, ...] = ()
    control_cache_seconds: float = 60.0
    control_concurrency: int = 16
    control_rate: float = 5.0
    control_burst: int = 50
    # Vouched controls (collector/vouched_control.py): the secret every collector process of a deployment
    # shares, from which the rotating control-signing keys are derived ("" = a random one per process: it
    # vouches for its own controls only); the rotation period; how much earlier than a measurement its
    # control may have been measured; and whether ingest judges only against a control it can authenticate
    # (off: the agent's embedded control is judged as given, as before vouching existed).
    control_signing_secret: str = ""
    control_key_period_seconds: float = 86_400.0
    control_max_age_seconds: float = 3_600.0
    require_vouched_control: bool = True
    # Test lists served by GET /api/v1/test-list: "CC=FILE" (Citizen Lab CSV); CC "global" is appended to
    # every country's list and served alone for countries without one.
    test_list: tuple[str, ...] = ()
    # Attribution (GET /api/v1/interference and the interference metrics): the sliding window, how many
    # networks must share a fingerprint, and in what share of the networks measured, for "gateway".
    attribution_window_seconds: float = 24 * 3600.0
    attribution_min_networks: int = 2
    attribution_gateway_share: float = 0.6
    # Unlinkable uploads (issue 12). Tokens: how many one agent key may have per weekly epoch (the bound
    # on what one agent can submit), how long after its epoch a token may still be spent, how fresh a
    # token request's timestamp must be, the issuer keys' size, and who may enrol a new key ("open",
    # "invite" with one of invite_codes, or "proof_of_work" of pow_bits bits).
    token_quota: int = 2000
    token_overlap_seconds: float = 3 * 24 * 3600.0
    token_request_skew_seconds: float = 300.0
    issuer_key_bits: int = 2048
    enrolment: str = ENROLMENT_OPEN
    invite_codes: tuple[str, ...] = ()
    pow_bits: int = 20
    # Identified mode, for operator-run probes that want to be known: off by default. accept_identified
    # takes batches signed by any long-term key; identified_keys (base64 Ed25519 keys) by those only.
    accept_identified: bool = False
    identified_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        if not self.db.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise SettingsError("db: expected sqlite:///PATH or postgresql://...")
        for name in (
            "max_body_bytes",
            "max_batch",
            "max_concurrent_uploads",
            "max_concurrent_exports",
            "key_burst",
            "rate_limit_keys",
            "control_concurrency",
            "control_burst",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1")
        for name in (
            "key_rate",
            "max_future_seconds",
            "max_age_seconds",
            "shutdown_timeout",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "control_rate",
            "control_key_period_seconds",
            "control_max_age_seconds",
            "attribution_window_seconds",
        ):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name}: must be positive")
        for name in ("max_future_seconds", "max_age_seconds"):
            if getattr(self, name) > _MAX_TIME_WINDOW:  # now ± the window must stay inside the calendar
                raise SettingsError(f"{name}: at most {_MAX_TIME_WINDOW:.0f} (100 years)")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("log_level: one of DEBUG, INFO, WARNING, ERROR")
        if not -1 <= self.check_processes <= _MAX_CHECK_PROCESSES:
            raise SettingsError(f"check_processes: -1 (per core), 0 (none) or up to {_MAX_CHECK_PROCESSES}")
        if not self.control_cache_seconds >= 0:
            raise SettingsError("control_cache_seconds: must not be negative")
        if not 0 <= self.metrics_min_interval_seconds <= _MAX_METRICS_INTERVAL:
            # a scrape may wait this long: it must stay well inside Prometheus' scrape timeout (10 s)
            raise SettingsError(f"metrics_min_interval_seconds: from 0 to {_MAX_METRICS_INTERVAL:g}")
        if self.control_resolver:
            parse_resolver(self.control_resolver)
        if self.control_signing_secret and len(self.control_signing_secret) < 32:
            raise SettingsError("control_signing_secret: at least 32 characters")
        for name in ("control_allow_net", "trusted_proxies"):
            for cidr in getattr(self, name):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise SettingsError(f"{name}: not a CIDR: {cidr!r}") from None
        parse_test_lists(self.test_list)
        if self.attribution_min_networks < 2:
            # One network alone can never show that interference is shared (the poisoned-network guard).
            raise SettingsError("attribution_min_networks: must be at least 2")
        if not 0 < self.attribution_gateway_share <= 1:
            raise SettingsError("attribution_gateway_share: must be in (0, 1]")
        if self.token_quota < 1 or not self.token_overlap_seconds >= 0:
            raise SettingsError("token_quota: at least 1; token_overlap_seconds: not negative")
        if not self.token_request_skew_seconds > 0:
            raise SettingsError("token_request_skew_seconds: must be positive")
        if self.issuer_key_bits < 2048:
            raise SettingsError("issuer_key_bits: at least 2048 (RFC 9474)")
        if self.enrolment not in ENROLMENT_POLICIES:
            raise SettingsError(f"enrolment: one of {', '.join(ENROLMENT_POLICIES)}")
        if self.enrolment == ENROLMENT_INVITE and not self.invite_codes:
            raise SettingsError("enrolment = invite needs invite_codes")
        if not 1 <= self.pow_bits <= 32:
            raise SettingsError("pow_bits: between 1 and 32")

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]


def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Turn a value from any source (a flag, an environment string, TOML) into the field's type."""
    try:
        if typing.get_origin(kind) is tuple:
            (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
            if isinstance(value, str):
                # Environment lists: paths are separated like PATH; other lists (CIDRs, whose IPv6 form
                # holds colons, and CC=FILE entries) by commas.
                separator = os.pathsep if item is Path else ","
                value = [part.strip() for part in value.split(separator) if part.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError("expected a list")
            return tuple(item(v) for v in value)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind in (int, float) and isinstance(value, bool):
            raise TypeError("expected a number")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise TypeError("expected an integer")
        if kind is str and not isinstance(value, str):
            raise TypeError("expected a string")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: cannot use {value!r} ({exc})") from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    # The collector's keys may sit at the top level or under [collector] (a file shared with other tools).
    section = data.get("collector", data)
    if not isinstance(section, dict):
        raise SettingsError(f"config file {path}: [collector] must be a table")
    return {k: v for k, v in section.items() if k != "collector"}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources; a flag or file key that is not a setting is an error (typos must not pass)."""
    env = os.environ if env is None else env
    known = _fields()
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    file_values = _from_file(config_file) if config_file is not None else {}
    env_values = {
        name: env[ENV_PREFIX + name.upper()] for name in known if env.get(ENV_PREFIX + name.upper())
    }
    merged: dict[str, Any] = {}
    for source_name, source in (("config file", file_values), ("environment", env_values), ("flags", flags)):
        for name, value in source.items():
            if name not in known:
                raise SettingsError(f"{source_name}: unknown setting {name!r}")
            merged[name] = _coerce(name, known[name], value)
    return Settings(**merged)

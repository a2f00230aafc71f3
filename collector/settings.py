"""The collector's settings, from flags, the environment (``GATEWATCH_*``) and a TOML file.

Precedence: flags > environment > file > defaults. Every field of :class:`Settings` can come from each
source under the same name (``max_batch`` is ``--max-batch``, ``GATEWATCH_MAX_BATCH`` and ``max_batch =``
in the file), so adding a setting is adding a field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings", "parse_listen"]

ENV_PREFIX = "GATEWATCH_"


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


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:8080"
    db: str = "sqlite:///gatewatch.db"
    asn_db: tuple[Path, ...] = ()
    country_db: tuple[Path, ...] = ()
    # Ingest limits. A full batch of 100 typical measurements is well under a megabyte.
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 100
    # Per-public-key token bucket: sustained requests per second, burst, and how many keys are remembered.
    key_rate: float = 1.0
    key_burst: int = 30
    rate_limit_keys: int = 100_000
    # Sanity of measurement_start_time: clocks drift a little; agents queue results while offline.
    max_future_seconds: float = 3600.0
    max_age_seconds: float = 30 * 24 * 3600.0
    # How long a stopping collector lets in-flight requests finish.
    shutdown_timeout: float = 30.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        if not self.db.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise SettingsError("db: expected sqlite:///PATH or postgresql://...")
        for name in ("max_body_bytes", "max_batch", "key_burst", "rate_limit_keys"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1")
        for name in ("key_rate", "max_future_seconds", "max_age_seconds", "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name}: must be positive")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("log_level: one of DEBUG, INFO, WARNING, ERROR")

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
                # Environment lists are separated like PATH.
                value = [part for part in value.split(os.pathsep) if part]
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

"""The agent's configuration: ``agent.toml`` in the data directory, overridden by command-line flags.

Example::

    collector_urls = ["https://collector.example.org/", "https://mirror.example.net/"]
    control_url = "https://collector.example.org/"   # defaults to the first collector
    probe_asn = "AS64501"                            # set the network by hand (or withhold it, below)
    skip_categories = ["LGBT", "POLR"]               # riskier categories where you live
    max_runtime = 1800

    [queue]
    max_unsent = 20000

``probe_asn = "AS0"`` and ``probe_cc = "ZZ"`` (OONI's withheld values, ``WITHHELD_ASN`` and ``WITHHELD_CC`` of
:mod:`gatewatch.core.vocabulary`) withhold the network and country.
Unknown keys are refused with a message naming them: a typo must not silently disable a privacy
choice such as ``skip_categories``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gatewatch.core.measurement import ASN, CountryCode

__all__ = ["AgentSettings", "DaemonSettings", "QueueSettings", "SettingsError", "load_settings"]


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
    slices: int = Field(default=24, ge=1, le=1000)
    # Measure the collector's confirmation requests (URLs that just showed an anomaly in the country) at
    # once, at most this many URLs an hour; 0 turns them off.
    confirm_per_hour: int = Field(default=30, ge=0, le=600)


class AgentSettings(_Section):
    collector_urls: list[str] = Field(default_factory=list)
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
    queue: QueueSettings = Field(default_factory=QueueSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)

    @field_validator("collector_urls", "control_url", mode="after")
    @classmethod
    def _http_urls(cls, value: list[str] | str | None) -> list[str] | str | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return value

    @field_validator("include_categories", "skip_categories", mode="after")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [code.strip().upper() for code in value if code.strip()]

    @property
    def effective_control_url(self) -> str | None:
        return self.control_url or (self.collector_urls[0] if self.collector_urls else None)

    def with_overrides(self, **changes: object) -> AgentSettings:
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

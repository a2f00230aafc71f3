"""The settings page's form and ``agent.toml``: what the page may change, read from and written to the
same file the command line and the daemon read (:mod:`..settings`), validated by the same model.

Only the keys the page shows are changed; every other key of the file is kept as it was. The file is
rewritten whole (atomically: a crash leaves the old file or the new one), so comments in it are lost:
its first line says it is written by the page as well.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC

from ..settings import AgentSettings, SettingsError

__all__ = [
    "CATEGORIES",
    "FormValues",
    "apply_form",
    "form_values",
    "read_raw",
    "to_toml",
    "write_settings",
]

# Citizen Lab's category codes (the test lists' category_code) and what they hold, for the opt-out boxes.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("ALDR", "Alcohol and drugs"),
    ("REL", "Religion"),
    ("PORN", "Pornography"),
    ("PROV", "Provocative attire"),
    ("POLR", "Political criticism"),
    ("HUMR", "Human rights"),
    ("ENV", "Environment"),
    ("MILX", "Terrorism and militants"),
    ("HATE", "Hate speech"),
    ("NEWS", "News media"),
    ("XED", "Sex education"),
    ("PUBH", "Public health"),
    ("GMB", "Gambling"),
    ("ANON", "Anonymization and circumvention tools"),
    ("DATE", "Online dating"),
    ("GRP", "Social networking"),
    ("LGBT", "LGBTQ+"),
    ("FILE", "File sharing"),
    ("HACK", "Hacking tools"),
    ("COMT", "Communication tools"),
    ("MMED", "Media sharing"),
    ("HOST", "Hosting and blogging"),
    ("SRCH", "Search engines"),
    ("GAME", "Gaming"),
    ("CULTR", "Culture"),
    ("ECON", "Economics"),
    ("GOVT", "Government"),
    ("COMM", "E-commerce"),
    ("CTRL", "Control content"),
    ("IGO", "Intergovernmental organisations"),
    ("MISC", "Miscellaneous"),
)
_HEADER = "# gatewatch agent settings: written by `gatewatch-agent ui` too (see `gatewatch-agent --help`)\n"
_MAX_COLLECTORS = 10


@dataclass(frozen=True)
class FormValues:
    """The settings as the page shows them (people's units: minutes, hours, megabytes)."""

    collector_urls: str  # one per line
    skip_categories: tuple[str, ...]
    max_runtime_minutes: str
    max_megabytes: str  # "" = no limit
    concurrency: int
    interval_hours: str
    jitter_minutes: str
    ipv6: bool
    upload: bool
    withhold: bool


def _number(value: float) -> str:
    return f"{value:g}"


def form_values(settings: AgentSettings) -> FormValues:
    return FormValues(
        collector_urls="\n".join(settings.collector_urls),
        skip_categories=tuple(settings.skip_categories),
        max_runtime_minutes="" if settings.max_runtime is None else _number(settings.max_runtime / 60),
        max_megabytes="" if settings.max_bytes is None else _number(settings.max_bytes / 1e6),
        concurrency=settings.concurrency,
        interval_hours=_number(settings.daemon.interval / 3600),
        jitter_minutes=_number(settings.daemon.jitter / 60),
        ipv6=settings.ipv6,
        upload=settings.upload,
        withhold=settings.probe_asn == WITHHELD_ASN and settings.probe_cc == WITHHELD_CC,
    )


def read_raw(path: Path) -> dict[str, Any]:
    """The file's own keys (not the defaults), so that saving the page keeps what the page does not show."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None


def _field(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def _positive(form: dict[str, list[str]], name: str, label: str, *, blank: bool) -> float | None:
    text = _field(form, name)
    if not text:
        if blank:
            return None
        raise SettingsError(f"{label}: a number is needed")
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{label}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{label}: {text!r} must be zero or more")
    return value


def apply_form(raw: dict[str, Any], form: dict[str, list[str]]) -> dict[str, Any]:
    """The file's keys with the page's changes; raises :class:`SettingsError` (for the page) when they
    are not valid settings."""
    data = json.loads(json.dumps(raw))  # a deep copy: the caller's dict is left as it was
    urls = [line.strip() for line in _field(form, "collector_urls").splitlines() if line.strip()]
    if len(urls) > _MAX_COLLECTORS:
        raise SettingsError(f"collectors: at most {_MAX_COLLECTORS}")
    data["collector_urls"] = urls
    known = {code for code, _ in CATEGORIES}
    checked = [code for code in form.get("skip_categories", []) if code in known]
    before = [str(code) for code in data.get("skip_categories", [])]
    # In the file's order: codes the page does not list stay, listed ones stay if still ticked; then new ones.
    kept = [code for code in before if code.upper() not in known or code.upper() in checked]
    data["skip_categories"] = kept + [c for c in checked if c not in {k.upper() for k in kept}]
    minutes = _positive(form, "max_runtime_minutes", "time budget", blank=False) or 0
    if minutes == 0:
        raise SettingsError("time budget: more than zero minutes")
    data["max_runtime"] = minutes * 60
    megabytes = _positive(form, "max_megabytes", "download budget", blank=True)
    if megabytes == 0:
        raise SettingsError("download budget: more than zero megabytes, or empty for no limit")
    data.pop("max_bytes", None)  # absent: no limit (the model's default)
    if megabytes is not None:
        data["max_bytes"] = max(1, round(megabytes * 1e6))
    concurrency = _positive(form, "concurrency", "sites at once", blank=False) or 0
    if concurrency != int(concurrency):
        raise SettingsError("sites at once: a whole number")
    data["concurrency"] = int(concurrency)
    hours = _positive(form, "interval_hours", "schedule", blank=False)
    jitter = _positive(form, "jitter_minutes", "random delay", blank=False)
    daemon = dict(data.get("daemon", {}))
    daemon["interval"] = (hours or 0) * 3600
    daemon["jitter"] = (jitter or 0) * 60
    data["daemon"] = daemon
    data["ipv6"] = "ipv6" in form
    data["upload"] = "upload" in form
    if "withhold" in form:
        data["probe_asn"], data["probe_cc"] = WITHHELD_ASN, WITHHELD_CC
    else:  # only the withheld values are taken back; a network set by hand stays
        if data.get("probe_asn") == WITHHELD_ASN:
            del data["probe_asn"]
        if data.get("probe_cc") == WITHHELD_CC:
            del data["probe_cc"]
    try:
        AgentSettings.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
            raise SettingsError(message) from None
        raise SettingsError(str(exc)) from None
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 3600.0: a float stays a float when read back
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise SettingsError(f"cannot write {type(value).__name__} to agent.toml")


def to_toml(data: dict[str, Any]) -> str:
    """``agent.toml``'s text: plain keys first, then one table per section. TOML has no null: a key
    whose value is ``None`` is left out (the model's default then applies)."""
    lines = [_HEADER.rstrip("\n")]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if key in tables or value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_settings(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_toml(data), encoding="utf-8")
    os.replace(tmp, path)

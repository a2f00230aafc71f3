"""``gatewatch-agent init``: the risks explained, the volunteer's consent recorded, the data directory and
signing key made; and the check every measuring command makes that consent is there and current."""

# Annotations stay objects, not text (no __future__ import): see cli_common.

import json
from typing import Annotated

import typer

from .cli_common import DataDir, console, fail, start_collecting
from .paths import DataPaths

__all__ = ["init", "require_consent"]


def _write_starter_settings(paths: DataPaths, collectors: list[str], tor: bool = False) -> None:
    if paths.settings.exists() or not collectors:
        return
    # JSON strings are valid TOML basic strings, so json.dumps quotes them safely.
    lines = [
        "# gatewatch agent settings (see `gatewatch-agent --help` and docs/raspberry-pi.md)",
        f"collector_urls = {json.dumps(collectors)}",
        "# Uploads only (never the measurements): through the local Tor, or a proxy of your own.",
        "tor = true" if tor else "# tor = true",
        '# proxy = "socks5h://127.0.0.1:1080"',
        "# The daemon uploads this many seconds (at random) after each pass.",
        "# upload_delay = [300, 3600]",
    ]
    paths.settings.write_text("\n".join(lines) + "\n", encoding="utf-8")


def init(
    yes: Annotated[bool, typer.Option("--yes", help="Consent without asking (automation).")] = False,
    collector: Annotated[
        list[str], typer.Option("--collector", help="Collector URL for a new agent.toml.")
    ] = [],  # noqa: B006
    tor: Annotated[
        bool, typer.Option("--tor", help="Upload through the local Tor (a new agent.toml).")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Explain the risks, record your consent, create the data directory and signing key."""
    from rich.panel import Panel

    from .consent import RISK_TEXT, record_consent
    from .keys import fingerprint, load_or_create_key

    start_collecting()
    paths = DataPaths.at(data_dir)
    out = console()
    out.print(Panel(RISK_TEXT, title="Before you start", expand=False))
    if not yes and not typer.confirm(
        "Do you understand these risks and want to run measurements?", default=False
    ):
        raise fail("no consent given: nothing was recorded", 1)
    paths.create()
    record = record_consent(paths.consent)
    key = load_or_create_key(paths.key)
    _write_starter_settings(paths, collector, tor)
    out.print(f"Consent recorded ({record.given_at}, text version {record.version}).")
    out.print(f"Data directory: {paths.root}")
    out.print(f"Signing key fingerprint: [bold]{fingerprint(key)}[/bold]")


def require_consent(paths: DataPaths) -> None:
    from .consent import CONSENT_VERSION, load_consent

    record = load_consent(paths.consent)
    if record is None:
        raise fail("no consent recorded: run `gatewatch-agent init` first (it explains the risks)")
    if not record.current:
        raise fail(f"the risk text changed (version {CONSENT_VERSION}): run `gatewatch-agent init` again")

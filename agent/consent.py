"""Informed consent: what running the agent means for the volunteer, in plain words, and its record.

The text is versioned: when it changes in substance, ``CONSENT_VERSION`` goes up and ``run`` asks again,
because consent given to an older description is not consent to the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC

__all__ = ["CONSENT_VERSION", "RISK_TEXT", "ConsentRecord", "load_consent", "record_consent"]

CONSENT_VERSION = 1

RISK_TEXT = f"""\
What gatewatch does
  It visits a list of websites from your connection, the way a browser would, and records whether each
  one loads or is interfered with (DNS, connection, TLS, or a block page). The results are signed and
  sent to a public research collector, where they help show who blocks what.

What others can learn
  * Anyone watching your connection (your internet provider, your employer, a government) can see that
    someone on this network is visiting these sites, some of which may be sensitive or illegal where
    you live. Running a measurement tool may itself draw attention.
  * The published results say that *someone on this network* (the provider and the country) tested
    these sites, at what time. They do not contain your IP address: the agent never sends it, and it
    removes it from anything a website or resolver echoed back before storing or signing.
  * Each agent signs with its own key, so results from the same agent can be linked to each other.

What you can choose
  * Skip categories that are riskier in your country (for example: skip_categories = ["LGBT", "POLR"]
    in agent.toml, or run with your own list).
  * Withhold the network and country (probe_asn = "{WITHHELD_ASN}", probe_cc = "{WITHHELD_CC}").
  * Keep results local only (run --no-upload). You can stop at any time.
"""


@dataclass(frozen=True)
class ConsentRecord:
    version: int
    given_at: str  # UTC, ISO 8601

    @property
    def current(self) -> bool:
        return self.version >= CONSENT_VERSION


def record_consent(path: Path) -> ConsentRecord:
    record = ConsentRecord(version=CONSENT_VERSION, given_at=format_utc(utc_now()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash never leaves half a record
    return record


def load_consent(path: Path) -> ConsentRecord | None:
    """The recorded consent, or ``None`` when there is none (or it is unreadable: ask again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ConsentRecord(version=int(data["version"]), given_at=str(data["given_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None

"""The pure analysis: observations in, verdicts out (no I/O but reading the packaged fingerprint files).

Two stages, each a table of rules with stable ids that researchers and alerts key on:

- One measurement (OONI web_connectivity semantics plus a TLS layer): :func:`analyse` judges a web
  measurement against its control, every layer verdict naming the rule in :data:`RULES` that decided it;
  :func:`summarise` turns a measurement from an uncensored vantage point into such a control; a
  :class:`FingerprintDB` (OONI's blocking-fingerprints CSV format) recognises blockpages and known blocking
  answers.
- Many measurements of one country: :func:`attribute` turns stored measurements (:class:`Observation`, from
  a :class:`StoredRow` of the collector's store) into one :class:`InterferenceRow` per domain, saying
  whether interference is at the gateway, in some ISPs, absent, or not yet decidable
  (:mod:`gatewatch.analysis.attribution`, its rules in ``attribution.RULES``).

Names (techniques, blocking values, scopes) come from :mod:`gatewatch.core.vocabulary`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .fingerprints import (
    BlockingFingerprint,
    FingerprintDB,
    FingerprintMatch,
    RejectedRow,
    load_default_fingerprints,
)
from .rules import RULES, Rule
from .summarise import summarise
from .web import analyse

if TYPE_CHECKING:
    from .attribution import (
        AttributionSettings,
        InterferenceRow,
        NetworkState,
        Observation,
        StoredRow,
        attribute,
        attribute_domain,
    )

# The many-measurements stage is the collector's: an agent judging one measurement never loads it
# (start-up, issue 16). Its names are still importable from here.
_ATTRIBUTION = frozenset(
    {
        "AttributionSettings",
        "InterferenceRow",
        "NetworkState",
        "Observation",
        "StoredRow",
        "attribute",
        "attribute_domain",
    }
)


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTION:
        from . import attribution

        return getattr(attribution, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RULES",
    "AttributionSettings",
    "BlockingFingerprint",
    "FingerprintDB",
    "FingerprintMatch",
    "InterferenceRow",
    "NetworkState",
    "Observation",
    "RejectedRow",
    "Rule",
    "StoredRow",
    "analyse",
    "attribute",
    "attribute_domain",
    "load_default_fingerprints",
    "summarise",
]

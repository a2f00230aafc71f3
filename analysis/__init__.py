"""The pure analysis: observations and a control in, a verdict out (no I/O but the fingerprint loader).

- :func:`analyse` judges one web measurement against its control (OONI web_connectivity semantics plus
  a TLS layer); every layer verdict names the rule in :data:`RULES` that decided it.
- :func:`summarise` turns a measurement from an uncensored vantage point into a control.
- :class:`FingerprintDB` holds blocking fingerprints in OONI's CSV format.
"""

from __future__ import annotations

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

__all__ = [
    "RULES",
    "BlockingFingerprint",
    "FingerprintDB",
    "FingerprintMatch",
    "RejectedRow",
    "Rule",
    "analyse",
    "load_default_fingerprints",
    "summarise",
]

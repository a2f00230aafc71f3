"""What the analysis concludes: per-layer verdicts, the overall ``blocking`` value, and fingerprints.

``blocking`` keeps OONI web_connectivity's meaning: ``False`` (no interference), ``"dns"``,
``"tcp_ip"``, ``"http-failure"``, ``"http-diff"``, or ``None`` when there is no verdict (the control
failed, or the measurement cannot be judged). TLS interference is reported as ``"http-failure"`` in
``blocking`` (as OONI does for https inputs) and separately as a ``tls`` layer verdict.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from .vocabulary import BlockingLayer

__all__ = ["Blocking", "Fingerprint", "LayerVerdict", "Verdict"]

Blocking = Literal[False, BlockingLayer] | None  # nested Literals flatten: one enum in the schema
Layer = Literal["dns", "tcp_ip", "tls", "http"]
Outcome = Literal["ok", "interference", "inconclusive"]


class Fingerprint(BaseModel):
    """How an interference looked, in terms that let the collector tell whether many networks see the
    *same* interference (same injected answers, same blockpage, same failure at the same stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Stable technique names, e.g. "dns.injection", "dns.nxdomain", "dns.bogon", "dns.inconsistent",
    # "tcp.timeout", "tcp.refused", "tls.reset", "tls.timeout", "tls.invalid_certificate",
    # "http.blockpage", "http.diff", "http.failure".
    technique: str
    stage: Layer
    failure: str | None = None
    injected_ips: list[str] = Field(default_factory=list)  # sorted
    blockpage_id: str | None = None  # the matched fingerprint's name (OONI blocking-fingerprints)
    body_sha256: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_key(cls, data: Any) -> Any:
        # ``key`` is derived (and serialised for readers); accept it back on load and recompute it.
        if isinstance(data, dict) and "key" in data:
            data = {k: v for k, v in data.items() if k != "key"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        """Short stable hash of everything that identifies this interference (used to group)."""
        parts = {
            "technique": self.technique,
            "stage": self.stage,
            "failure": self.failure,
            "injected_ips": sorted(self.injected_ips),
            "blockpage_id": self.blockpage_id,
            # A recognised blockpage is identified by its fingerprint id; its exact bytes may vary.
            "body_sha256": None if self.blockpage_id else self.body_sha256,
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return digest[:16]


class LayerVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: Layer
    outcome: Outcome
    rule_id: str  # stable id of the rule that decided (see analysis/rules.py)
    reason: str  # one sentence, for people
    fingerprint: Fingerprint | None = None


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    blocking: Blocking
    accessible: bool | None
    layers: list[LayerVerdict] = Field(default_factory=list)
    # The fingerprint of the interference that decided ``blocking`` (None when blocking is False/None).
    fingerprint: Fingerprint | None = None
    # dns_consistency as OONI names it: "consistent", "inconsistent", or None when it cannot be told.
    dns_consistency: Literal["consistent", "inconsistent"] | None = None
    body_length_match: bool | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None

    @property
    def anomaly(self) -> bool:
        return self.blocking not in (False, None)

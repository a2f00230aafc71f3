"""The agent speaks the project's vocabulary (:mod:`gatewatch.core.vocabulary`) by importing it: a value
spelled a second time in the agent drifts silently when the vocabulary changes (the agent once had its own
withheld ASN and country, its own list of the collector's content refusals, and a ``blocking_label`` whose
output differed from the vocabulary's)."""

from __future__ import annotations

from gatewatch.agent import display
from gatewatch.agent.consent import RISK_TEXT
from gatewatch.agent.display import describe_blocking
from gatewatch.core import vocabulary
from gatewatch.core.vocabulary import (
    BLOCKING_LABELS,
    BLOCKING_LAYERS,
    NO_VERDICT,
    NOT_BLOCKED,
    WITHHELD_ASN,
    WITHHELD_CC,
    blocking_value,
)

# That no agent module spells a vocabulary word again is checked for every package in
# tests/core/test_vocabulary.py.


def test_every_verdict_of_the_vocabulary_has_its_own_words() -> None:
    words = {label: describe_blocking(blocking_value(label)) for label in BLOCKING_LABELS}
    assert words[NOT_BLOCKED] == "accessible" and words[NO_VERDICT] == "no verdict"
    assert all(words[layer] == f"blocked ({layer})" for layer in BLOCKING_LAYERS)
    assert len(set(words.values())) == len(BLOCKING_LABELS)


def test_the_display_has_no_blocking_label_of_its_own() -> None:
    assert getattr(display, "blocking_label", vocabulary.blocking_label) is vocabulary.blocking_label


def test_the_consent_text_names_the_withheld_values_the_agent_uses() -> None:
    assert f'probe_asn = "{WITHHELD_ASN}", probe_cc = "{WITHHELD_CC}"' in RISK_TEXT

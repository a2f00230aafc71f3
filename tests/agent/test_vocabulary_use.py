"""The agent speaks the project's vocabulary (:mod:`gatewatch.core.vocabulary`) by importing it: a value
spelled a second time in the agent drifts silently when the vocabulary changes (the agent once had its own
withheld ASN and country, its own list of the collector's content refusals, and a ``blocking_label`` whose
output differed from the vocabulary's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gatewatch.agent
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

AGENT = Path(gatewatch.agent.__file__).parent
SPOKEN = {
    WITHHELD_ASN,
    WITHHELD_CC,
    *vocabulary.REQUEST_ERRORS,
    *vocabulary.ITEM_REJECTIONS,
    *vocabulary.TECHNIQUES,
    *vocabulary.FLAGS,
}
# The agent's HTTP client names a request it could not send "invalid_request" (a failure of its own,
# recorded as such): the same word as the collector's reason, not the collector's reason.
OWN_WORDS = {("http_client.py", "invalid_request")}


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    docstrings = {
        ast.get_docstring(node, clean=False)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    }
    return strings - docstrings


@pytest.mark.parametrize("path", sorted(AGENT.glob("*.py")), ids=lambda path: path.name)
def test_no_vocabulary_value_is_spelled_again_in_the_agent(path: Path) -> None:
    spelled = {value for value in _string_constants(path) & SPOKEN if (path.name, value) not in OWN_WORDS}
    assert not spelled, f"import these from gatewatch.core.vocabulary: {sorted(spelled)}"


def test_every_verdict_of_the_vocabulary_has_its_own_words() -> None:
    words = {label: describe_blocking(blocking_value(label)) for label in BLOCKING_LABELS}
    assert words[NOT_BLOCKED] == "accessible" and words[NO_VERDICT] == "no verdict"
    assert all(words[layer] == f"blocked ({layer})" for layer in BLOCKING_LAYERS)
    assert len(set(words.values())) == len(BLOCKING_LABELS)


def test_the_display_has_no_blocking_label_of_its_own() -> None:
    assert getattr(display, "blocking_label", vocabulary.blocking_label) is vocabulary.blocking_label


def test_the_consent_text_names_the_withheld_values_the_agent_uses() -> None:
    assert f'probe_asn = "{WITHHELD_ASN}", probe_cc = "{WITHHELD_CC}"' in RISK_TEXT

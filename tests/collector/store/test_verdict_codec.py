"""Stored verdicts deflated with a preset dictionary: every verdict comes back as the same text, old JSON
rows are read as they are, and the frozen dictionary stays frozen."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewatch.analysis.rules import RULES
from gatewatch.collector.store import verdict_codec
from gatewatch.collector.store.verdict_codec import decode_verdict, encode_verdict
from gatewatch.core.verdicts import Fingerprint, LayerVerdict, Verdict

# Stored verdicts are only readable with the dictionary they were written with: this digest must never
# change (a new dictionary is a new version byte, the old one kept for decoding).
DICTIONARY_1_SHA256 = "4a3ec43a2ad2a0fac0d76aee83ea559c7508d950a3f8f6f4f35bac2efffd41d5"


def test_the_version_1_dictionary_is_frozen() -> None:
    assert hashlib.sha256(verdict_codec._DICTIONARY_1).hexdigest() == DICTIONARY_1_SHA256


def _verdicts() -> list[str]:
    """A verdict per rule, as the analysis writes them, plus one with a fingerprint and non-ASCII text."""
    texts = []
    for rule in RULES:
        layer = LayerVerdict.model_validate(
            {
                "layer": "dns" if rule.layer == "control" else rule.layer,
                "outcome": "ok",
                "rule_id": rule.rule_id,
                "reason": rule.why,
            }  # fmt: skip
        )
        texts.append(Verdict(blocking=False, accessible=True, layers=[layer]).model_dump_json())
    fingerprint = Fingerprint.model_validate(
        {"technique": "http.blockpage", "stage": "http", "blockpage_id": "Страница блокировки é"}
    )
    texts.append(Verdict(blocking="http-diff", accessible=False, fingerprint=fingerprint).model_dump_json())
    return texts


@pytest.mark.parametrize("text", _verdicts())
def test_every_rules_verdict_round_trips_and_shrinks(text: str) -> None:
    stored = encode_verdict(text)
    assert isinstance(stored, bytes) and decode_verdict(stored) == text
    assert decode_verdict(bytearray(stored)) == text  # as a driver may hand a BLOB back
    assert len(stored) < len(text) / (3 if '"layers":[]' not in text else 1.5)


@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        return  # a lone surrogate is no JSON the analysis writes (the store refuses it as unstorable)
    assert decode_verdict(encode_verdict(text)) == text


def test_rows_stored_before_are_read_as_they_are() -> None:
    old = json.dumps({"blocking": "dns", "accessible": False})
    assert decode_verdict(old) == old


def test_unknown_or_damaged_encodings_are_errors_not_guesses() -> None:
    stored = encode_verdict(_verdicts()[0])
    with pytest.raises(ValueError, match="unknown verdict encoding"):
        decode_verdict(b"\x02" + stored[1:])
    with pytest.raises((ValueError, Exception)):
        decode_verdict(stored[: len(stored) // 2])

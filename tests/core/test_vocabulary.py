"""The vocabulary is the one home of its words: no package spells one again (a second spelling drifts
silently: the interference metrics once allowed 13 of the analysis's 25 techniques, and the others reached
the dashboards as ``other``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gatewatch.analysis import RULES
from gatewatch.core import vocabulary as V

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("core", "probes", "analysis", "agent", "collector", "lab", "dashboards", "bench")

# Words with one meaning in the vocabulary, spelled nowhere else. (``false``/``null`` and the scopes are
# also ordinary words, or Literal types checked where they are written; they are not scanned.)
WORDS: dict[str, str] = {
    value: name
    for name in dir(V)
    if name.isupper() and isinstance(value := getattr(V, name), str) and value not in {"false", "null"}
}
# The same letters meaning something else, where they stand.
OWN_WORDS = {
    # the agent's HTTP client's failure for a request it could not send, not the collector's reason
    ("agent/http_client.py", V.INVALID_REQUEST),
    # the volunteer page's run phase and a connect's outcome in plain words, not a packet trace's status
    ("agent/ui/runs.py", V.TRACE_FAILED),
    ("agent/ui/result_pages.py", V.TRACE_FAILED),
}
# The analysis's rule ids are a stable table of their own; some read like the technique they conclude.
RULE_IDS = frozenset(rule.rule_id for rule in RULES)


def _spelled(path: Path) -> set[str]:
    """String constants of ``path`` that are vocabulary words (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in WORDS
        and id(node) not in docstrings
    }


def _sources() -> list[Path]:
    return sorted(
        path
        for folder in SCANNED
        for path in (REPO / folder).rglob("*.py")
        if path != REPO / "core" / "vocabulary.py"
    )


@pytest.mark.parametrize("path", _sources(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_package_spells_a_vocabulary_word_again(path: Path) -> None:
    where = str(path.relative_to(REPO))
    again = {word for word in _spelled(path) if (where, word) not in OWN_WORDS}
    if where.startswith("analysis/"):
        again -= RULE_IDS
    assert not again, f"import from gatewatch.core.vocabulary instead: {sorted(WORDS[w] for w in again)}"


def test_the_scan_sees_a_second_spelling(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""dns.injection in a docstring is prose."""\nX = "dns.servfail"\nY = f"{1}"\n')
    assert _spelled(planted) == {V.DNS_SERVFAIL}
    assert RULE_IDS, "the rule table is read, so the exemption is for real rule ids only"


@pytest.mark.parametrize("label", V.BLOCKING_LABELS)
def test_blocking_label_and_value_are_inverse(label: str) -> None:
    assert V.blocking_label(V.blocking_value(label)) == label


@pytest.mark.parametrize("bad", ["False", "", "dns ", "http_diff", 0, True])
def test_blocking_label_refuses_what_is_not_a_blocking_value(bad: object) -> None:
    with pytest.raises(ValueError):
        V.blocking_label(bad)
    with pytest.raises(ValueError):
        V.blocking_value(str(bad))


def test_every_list_is_without_repeats() -> None:
    for listed in (V.TECHNIQUES, V.BLOCKING_LABELS, V.FLAGS, V.ITEM_REJECTIONS, V.REQUEST_ERRORS):
        assert len(set(listed)) == len(listed)
    named = {value for value in WORDS if "." in value}
    assert named == set(V.TECHNIQUES), "every technique constant is listed in TECHNIQUES, and only those"

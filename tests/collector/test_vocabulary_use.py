"""The collector spells no reason itself: every error and rejection reason it answers with is a name
imported from gatewatch.core.vocabulary, never a string literal (a re-spelt copy drifts silently)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gatewatch.collector
from gatewatch.collector.metrics import REQUEST_RESULTS
from gatewatch.core import vocabulary

COLLECTOR = Path(gatewatch.collector.__file__).parent
# callable -> the positions (int) or keywords (str) of its reason arguments
REASON_ARGUMENTS: dict[str, tuple[int | str, ...]] = {
    "error_response": (1, "error"),
    "RequestRefused": (1, "error"),
    "BadQuery": (0, "error"),
    "reject": (0, "reason"),
    "ControlBatchItem": ("error",),
    "ErrorBody": ("error",),
    "IngestItemResult": ("reason",),
}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _calls(name: str) -> Iterator[tuple[Path, ast.Call]]:
    for path in sorted(COLLECTOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _name(node) == name:
                yield path, node


def _arguments(call: ast.Call, where: tuple[int | str, ...]) -> Iterator[ast.expr]:
    for place in where:
        if isinstance(place, int) and place < len(call.args):
            yield call.args[place]
        yield from (k.value for k in call.keywords if k.arg == place)


@pytest.mark.parametrize("name", sorted(REASON_ARGUMENTS))
def test_reasons_are_vocabulary_names_not_literals(name: str) -> None:
    spelt = [
        f"{path.relative_to(COLLECTOR)}:{call.lineno}"
        for path, call in _calls(name)
        for argument in _arguments(call, REASON_ARGUMENTS[name])
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str)
    ]
    assert not spelt, f"import the reason from gatewatch.core.vocabulary instead: {spelt}"


def test_the_scan_finds_the_calls() -> None:
    """The test above would pass vacuously if the names it looks for were renamed."""
    assert all(
        any(True for _ in _calls(name)) for name in ("error_response", "RequestRefused", "BadQuery", "reject")
    )


def test_refusals_count_under_a_declared_request_result() -> None:
    metrics = [call.args[3] for _, call in _calls("RequestRefused") if len(call.args) > 3]
    assert metrics
    for metric in metrics:
        # a label of its own ("bad_request") or a vocabulary reason used as the label ("rate_limited")
        value = metric.value if isinstance(metric, ast.Constant) else getattr(vocabulary, metric.id, None)
        assert value in REQUEST_RESULTS, ast.dump(metric)

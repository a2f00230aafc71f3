"""Every technique the analysis can emit is one of the vocabulary's: dashboards, alerts and the interference
metrics' label allowlist take exactly ``vocabulary.TECHNIQUES``, and an unknown name would silently become
``other`` there.

Here the code: every ``Fingerprint(technique=...)`` in the analysis is given a vocabulary name, or looks one
up in a mapping whose values and default are all vocabulary names. test_web.py checks the verdicts of the
golden cases (every fingerprint they carry names a vocabulary technique).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from gatewatch import analysis
from gatewatch.core import vocabulary
from gatewatch.core.vocabulary import TECHNIQUES

SOURCE = Path(analysis.__file__).parent
# How the analysis modules import the vocabulary (``from gatewatch.core import vocabulary as V``).
VOCABULARY_ALIAS = "V"


def _vocabulary_name(node: ast.expr) -> str | None:
    """The technique ``node`` names when it is ``V.NAME`` of the vocabulary, else None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == VOCABULARY_ALIAS
    ):
        value = getattr(vocabulary, node.attr, None)
        return value if isinstance(value, str) else None
    return None


def _problems(source: str, module: object) -> list[str]:
    """Why a ``technique=`` argument in ``source`` might name something outside TECHNIQUES (empty: none)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if callee != "Fingerprint":
            continue
        given = {kw.arg: kw.value for kw in node.keywords}
        if None in given or "technique" not in given:  # **kwargs, or no keyword: cannot be checked
            found.append(f"line {node.lineno}: technique is not given as a keyword")
            continue
        value = given["technique"]
        if _vocabulary_name(value) in TECHNIQUES:
            continue
        # MAPPING.get(key, V.DEFAULT): every value of the module's mapping, and the default, are techniques.
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get"
            and isinstance(value.func.value, ast.Name)
            and len(value.args) == 2
            and _vocabulary_name(value.args[1]) in TECHNIQUES
        ):
            mapping = getattr(module, value.func.value.id, None)
            if isinstance(mapping, dict) and mapping and set(mapping.values()) <= set(TECHNIQUES):
                continue
        found.append(f"line {node.lineno}: technique={ast.unparse(value)} is not a vocabulary technique")
    return found


@pytest.mark.parametrize("path", sorted(SOURCE.glob("*.py")), ids=lambda p: p.name)
def test_the_code_emits_only_vocabulary_techniques(path: Path) -> None:
    module = importlib.import_module(
        f"gatewatch.analysis.{path.stem}" if path.stem != "__init__" else "gatewatch.analysis"
    )
    assert _problems(path.read_text(encoding="utf-8"), module) == []


def test_the_layers_emit_fingerprints() -> None:
    # The check above would pass vacuously if the layers stopped calling Fingerprint(...) by that name.
    calls = sum(
        1
        for path in SOURCE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Fingerprint"
    )
    assert calls >= 10


class _Module:
    GOOD = {"a": vocabulary.DNS_TIMEOUT}
    MIXED = {"a": vocabulary.DNS_TIMEOUT, "b": "dns.new"}


@pytest.mark.parametrize(
    "source",
    [
        'Fingerprint(technique="dns.new", stage="dns")',
        'Fingerprint(technique="dns.injection", stage="dns")',  # right value, but spelt again
        "Fingerprint(technique=V.NOT_A_NAME, stage='dns')",
        "Fingerprint(technique=V.NOT_BLOCKED, stage='dns')",  # a vocabulary word, but not a technique
        "Fingerprint(technique=MIXED.get(failure, V.DNS_FAILURE), stage='dns')",
        "Fingerprint(technique=GOOD.get(failure, 'dns.other'), stage='dns')",
        "Fingerprint(technique=pick(failure), stage='dns')",
        "Fingerprint(stage='dns', **fields)",
    ],
)
def test_the_check_catches_a_technique_outside_the_vocabulary(source: str) -> None:
    assert _problems(source, _Module)


def test_the_check_accepts_vocabulary_names() -> None:
    assert _problems("Fingerprint(technique=V.DNS_INJECTION, stage='dns')", _Module) == []
    assert _problems("Fingerprint(technique=GOOD.get(failure, V.DNS_FAILURE), stage='dns')", _Module) == []

"""The demo, the end-to-end tests and the benchmarks start gatewatch's programs by their console scripts:
those must be the ones pyproject.toml installs, found beside the interpreter first, then on PATH."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from gatewatch.lab import scripts
from gatewatch.lab.scripts import SCRIPTS, ScriptNotFound, console_script

REPO = Path(__file__).resolve().parents[2]


def test_the_scripts_are_those_pyproject_installs() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert set(SCRIPTS) == set(declared)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_installed_script_runs_under_its_own_name(name: str) -> None:
    path = console_script(name)
    assert Path(path).name == name and os.access(path, os.X_OK)
    done = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"Usage: {name} " in done.stdout  # the name a user reads in help and errors


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n", encoding="ascii")
    path.chmod(0o755)
    return path


def test_beside_the_interpreter_comes_before_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv, elsewhere = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    venv.mkdir(parents=True)
    elsewhere.mkdir()
    beside = _executable(venv, "gatewatch-agent")
    _executable(elsewhere, "gatewatch-agent")
    _executable(elsewhere, "gatewatch-collector")
    monkeypatch.setattr(scripts.sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    assert console_script("gatewatch-agent") == str(beside)
    assert console_script("gatewatch-collector") == str(elsewhere / "gatewatch-collector")


def test_a_missing_script_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "gatewatch-lab").write_text("not executable", encoding="ascii")
    with pytest.raises(ScriptNotFound, match="gatewatch-lab is not installed"):
        console_script("gatewatch-lab")
    with pytest.raises(ValueError, match="not one of gatewatch's console scripts"):
        console_script("python")

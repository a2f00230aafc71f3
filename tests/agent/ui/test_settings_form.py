"""The settings form and agent.toml: what the page writes reads back as the same settings, keeps the keys
it does not show, and refuses what the settings model refuses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.agent.settings import AgentSettings, SettingsError, load_settings
from gatewatch.agent.ui.settings_form import CATEGORIES, apply_form, form_values, to_toml, write_settings
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC


def _form(values: AgentSettings, **changes: list[str]) -> dict[str, list[str]]:
    """The form as the page would post it for ``values`` (the page's own rendering of them)."""
    v = form_values(values)
    form = {
        "collector_urls": [v.collector_urls],
        "skip_categories": list(v.skip_categories),
        "max_runtime_minutes": [v.max_runtime_minutes],
        "max_megabytes": [v.max_megabytes],
        "concurrency": [str(v.concurrency)],
        "interval_hours": [v.interval_hours],
        "jitter_minutes": [v.jitter_minutes],
    }
    for name, on in (("ipv6", v.ipv6), ("upload", v.upload), ("withhold", v.withhold)):
        if on:
            form[name] = ["on"]
    form.update(changes)
    return form


def test_saving_the_page_unchanged_changes_no_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'collector_urls = ["https://c.example/"]\ntest_list_cc = "KH"\nprobe_asn = "AS64501"\n'
        'skip_categories = ["LGBT", "XYZ"]\nmax_bytes = 2500000\nupload_batch = 7\n'
        "[queue]\nmax_sent = 10\n[daemon]\ninterval = 7200\n",
        encoding="utf-8",
    )
    before = load_settings(path)
    write_settings(path, apply_form(tomllib.loads(path.read_text()), _form(before)))
    assert load_settings(path) == before  # the unknown category code XYZ included
    assert path.read_text().startswith("# gatewatch agent settings")


def test_withholding_and_giving_back_the_network() -> None:
    base = AgentSettings(probe_asn="AS64501")
    raw = apply_form({"probe_asn": "AS64501"}, _form(base, withhold=["on"]))
    assert (raw["probe_asn"], raw["probe_cc"]) == (WITHHELD_ASN, WITHHELD_CC)
    back = apply_form(
        raw, {k: v for k, v in _form(AgentSettings.model_validate(raw)).items() if k != "withhold"}
    )
    assert "probe_asn" not in back and "probe_cc" not in back
    kept = apply_form({"probe_asn": "AS64501"}, _form(base))
    assert kept["probe_asn"] == "AS64501"  # a network set by hand is not taken back


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("collector_urls", "ftp://x", "not an http(s) URL"),
        ("max_runtime_minutes", "0", "time budget"),
        ("max_runtime_minutes", "", "time budget"),
        ("max_megabytes", "-2", "download budget"),
        ("concurrency", "1.5", "whole number"),
        ("concurrency", "999", "concurrency"),
        ("interval_hours", "inf", "schedule"),
        ("jitter_minutes", "x", "not a number"),
        ("collector_urls", "\n".join(f"http://c{i}.example/" for i in range(11)), "at most"),
    ],
)
def test_bad_values_are_refused_with_words(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        apply_form({}, _form(AgentSettings(), **{name: [value]}))


@settings(max_examples=60, deadline=None)
@given(
    urls=st.lists(
        st.sampled_from(["http://a.example/", "https://b.example:8443/x", 'http://q.example/"\\']), max_size=3
    ),
    skipped=st.lists(st.sampled_from([code for code, _ in CATEGORIES]), unique=True),
    minutes=st.floats(min_value=0.5, max_value=10_000, allow_nan=False),
    hours=st.floats(min_value=0.01, max_value=1000, allow_nan=False),
    ipv6=st.booleans(),
    upload=st.booleans(),
)
def test_whatever_the_page_accepts_reads_back_the_same(
    urls: list[str], skipped: list[str], minutes: float, hours: float, ipv6: bool, upload: bool
) -> None:
    form = _form(
        AgentSettings(),
        collector_urls=["\n".join(urls)],
        skip_categories=skipped,
        max_runtime_minutes=[repr(minutes)],
        interval_hours=[repr(hours)],
    )
    form.pop("ipv6", None), form.pop("upload", None)
    form.update({"ipv6": ["on"]} if ipv6 else {})
    form.update({"upload": ["on"]} if upload else {})
    raw = apply_form({}, form)
    read = AgentSettings.model_validate(tomllib.loads(to_toml(raw)))
    assert read == AgentSettings.model_validate(raw)
    assert read.collector_urls == urls and read.skip_categories == skipped
    assert read.ipv6 is ipv6 and read.upload is upload

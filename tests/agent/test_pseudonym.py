"""The optional network pseudonym (issue 12): stable within a (network, epoch), unrelated across them,
absent for a withheld network; its secret kept 0600."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

from gatewatch.agent.pseudonym import (
    PSEUDONYM_ANNOTATION,
    load_or_create_secret,
    network_pseudonym,
    with_pseudonym,
)
from gatewatch.core.batch_token import EPOCH_SECONDS

from .conftest import make_measurement


def test_one_value_per_network_and_epoch_and_none_when_withheld(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "s")
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "s") == secret  # kept
    here = network_pseudonym(secret, "AS64501", "XL", 2900)
    assert here == network_pseudonym(secret, "AS64501", "XL", 2900)
    others = {
        network_pseudonym(secret, "AS64502", "XL", 2900),
        network_pseudonym(secret, "AS64501", "XL", 2901),
        network_pseudonym(bytes(32), "AS64501", "XL", 2900),  # another agent
    }
    assert here not in others and len(others) == 3
    assert network_pseudonym(secret, "AS0", "ZZ", 2900) is None


def test_measurements_of_one_week_share_it_and_the_next_week_does_not(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "s")
    first = make_measurement()
    later = make_measurement()
    values = {with_pseudonym(m, secret).annotations[PSEUDONYM_ANNOTATION] for m in (first, later)}
    assert len(values) == 1
    next_week = first.model_copy(
        update={"measurement_start_time": first.measurement_start_time + timedelta(seconds=EPOCH_SECONDS)}
    )
    assert with_pseudonym(next_week, secret).annotations[PSEUDONYM_ANNOTATION] not in values
    withheld = first.model_copy(update={"probe_asn": "AS0"})
    assert PSEUDONYM_ANNOTATION not in with_pseudonym(withheld, secret).annotations

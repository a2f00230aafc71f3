from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gatewatch.agent.consent import CONSENT_VERSION, load_consent, record_consent
from gatewatch.agent.keys import SigningKeyError, fingerprint, load_key, load_or_create_key
from gatewatch.agent.paths import DataPaths, default_data_dir
from gatewatch.agent.settings import AgentSettings, SettingsError, load_settings


def test_the_key_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert fingerprint(load_key(tmp_path / "k.pem")) == fingerprint(key)
    assert fingerprint(load_or_create_key(tmp_path / "k.pem")) == fingerprint(key)
    assert len(fingerprint(key)) == 16


def test_a_missing_or_foreign_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="init"):
        load_key(tmp_path / "absent.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(SigningKeyError):
        load_key(tmp_path / "junk.pem")


def test_the_key_file_reads_the_same_by_hand_as_by_openssl(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    from gatewatch.agent.keys import _ed25519_from_pkcs8_pem

    key = load_or_create_key(tmp_path / "k.pem")
    pem = (tmp_path / "k.pem").read_bytes()
    by_hand = _ed25519_from_pkcs8_pem(pem)
    assert by_hand is not None
    raw = (Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert by_hand.private_bytes(*raw) == key.private_bytes(*raw)
    assert by_hand.private_bytes(*raw) == load_pem_private_key(pem, None).private_bytes(*raw)  # type: ignore[union-attr]
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert _ed25519_from_pkcs8_pem((tmp_path / "ec.pem").read_bytes()) is None
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        load_key(tmp_path / "ec.pem")


def test_consent_round_trip_and_garbage(tmp_path: Path) -> None:
    assert load_consent(tmp_path / "consent.json") is None
    record = record_consent(tmp_path / "consent.json")
    loaded = load_consent(tmp_path / "consent.json")
    assert loaded == record and loaded.current and loaded.version == CONSENT_VERSION
    (tmp_path / "consent.json").write_text("{")
    assert load_consent(tmp_path / "consent.json") is None
    (tmp_path / "consent.json").write_text('{"version": 0, "given_at": "2020-01-01T00:00:00Z"}')
    assert load_consent(tmp_path / "consent.json").current is False  # type: ignore[union-attr]


def test_data_dir_is_private_and_follows_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = DataPaths.at(tmp_path / "data")
    paths.create()
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert default_data_dir() == tmp_path / "state"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "gatewatch"


def test_settings_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    assert load_settings(path) == AgentSettings()
    path.write_text(
        'collector_urls = ["https://c.example/"]\nprobe_asn = "AS0"\nprobe_cc = "ZZ"\n'
        'skip_categories = ["lgbt"]\n[queue]\nmax_unsent = 10\n[daemon]\ninterval = 60\n'
    )
    settings = load_settings(path)
    assert settings.effective_control_url == "https://c.example/"
    assert settings.skip_categories == ["LGBT"] and settings.queue.max_unsent == 10
    changed = settings.with_overrides(
        collector_urls=["http://127.0.0.1:9/"], control_url=None, concurrency=None
    )
    assert changed.collector_urls == ["http://127.0.0.1:9/"] and changed.concurrency == settings.concurrency


def test_full_bodies_are_off_unless_the_volunteer_opts_in(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    assert load_settings(path).keep_full_bodies is False
    path.write_text("keep_full_bodies = true\n")
    assert load_settings(path).keep_full_bodies is True
    path.write_text("keep_full_body = true\n")  # a typo must not silently leave the choice unmade
    with pytest.raises(SettingsError, match="keep_full_body"):
        load_settings(path)


@pytest.mark.parametrize(
    "text",
    [
        'skip_categorys = ["LGBT"]\n',
        'collector_urls = ["ftp://x/"]\n',
        'probe_asn = "64501"\n',
        "concurrency = 0\n",
        "= broken",
    ],
)
def test_bad_settings_are_refused_with_a_reason(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match="agent.toml"):
        load_settings(path)


def test_unlinkable_uploads_are_the_default_and_identified_mode_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    assert not load_settings(path).identified and not load_settings(path).network_pseudonym
    path.write_text('identified = true\n[tokens]\nlow = 2\nhigh = 5\ninvite_code = "lab"\n')
    settings = load_settings(path)
    assert settings.identified and (settings.tokens.low, settings.tokens.high) == (2, 5)
    assert settings.tokens.invite_code == "lab"
    path.write_text("[tokens]\nlw = 2\n")
    with pytest.raises(SettingsError, match="lw"):
        load_settings(path)

"""Settings: flags > environment > file > defaults, and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.collector.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_listen,
    parse_resolver,
    parse_test_lists,
)
from gatewatch.core.vocabulary import ENROLMENT_INVITE, ENROLMENT_OPEN


def test_defaults() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 8080)
    assert s.db.startswith("sqlite:///")


def test_precedence_flags_env_file(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('db = "sqlite:///from-file.db"\nmax_batch = 7\nkey_rate = 3\nlisten = "127.0.0.2:1"\n')
    env = {"GATEWATCH_MAX_BATCH": "8", "GATEWATCH_LISTEN": "127.0.0.3:2"}
    s = load_settings({"listen": "127.0.0.4:3", "db": None}, env=env, config_file=config)
    assert s.listen == "127.0.0.4:3"  # flag beats environment and file
    assert s.max_batch == 8  # environment beats file
    assert s.db == "sqlite:///from-file.db"  # file beats default; an unset flag (None) does not count
    assert s.key_rate == 3.0 and isinstance(s.key_rate, float)
    assert s.max_future_seconds == Settings().max_future_seconds  # default


def test_config_file_from_environment_and_collector_table(tmp_path: Path) -> None:
    config = tmp_path / "shared.toml"
    config.write_text('[collector]\nasn_db = ["a.csv", "b.mmdb"]\n\n[agent]\nname = "x"\n')
    s = load_settings(env={"GATEWATCH_CONFIG": str(config)})
    assert s.asn_db == (Path("a.csv"), Path("b.mmdb"))


def test_lists_from_the_environment_and_flags() -> None:
    s = load_settings({"country_db": [Path("c.csv")]}, env={"GATEWATCH_ASN_DB": "one.csv:two.csv"})
    assert s.asn_db == (Path("one.csv"), Path("two.csv"))
    assert s.country_db == (Path("c.csv"),)


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"listen": "nohost"}, {}, "listen"),
        ({"listen": "127.0.0.1:99999"}, {}, "listen"),
        ({"db": "mysql://x"}, {}, "db"),
        ({}, {"GATEWATCH_MAX_BATCH": "many"}, "max_batch"),
        ({}, {"GATEWATCH_MAX_BATCH": "0"}, "max_batch"),
        ({}, {"GATEWATCH_KEY_RATE": "-1"}, "key_rate"),
        ({"max_batch": 1.5}, {}, "max_batch"),
        ({"max_batch": True}, {}, "max_batch"),
        ({"log_level": "LOUD"}, {}, "log_level"),
        ({"no_such_setting": 1}, {}, "no_such_setting"),
        ({"control_resolver": "dns.example"}, {}, "control_resolver"),
        ({"control_resolver": "127.0.0.1:0"}, {}, "control_resolver"),
        ({"control_resolver": "[::1]x"}, {}, "control_resolver"),
        ({"control_allow_net": ["127.0.0.0/33"]}, {}, "control_allow_net"),
        ({}, {"GATEWATCH_CONTROL_ALLOW_NET": "lab"}, "control_allow_net"),
        ({"control_rate": 0}, {}, "control_rate"),
        ({"control_burst": 0}, {}, "control_burst"),
        ({"control_concurrency": 0}, {}, "control_concurrency"),
        ({"control_cache_seconds": -1}, {}, "control_cache_seconds"),
        ({"metrics_min_interval_seconds": -0.1}, {}, "metrics_min_interval_seconds"),
        ({}, {"GATEWATCH_METRICS_MIN_INTERVAL_SECONDS": "30"}, "metrics_min_interval_seconds"),
        ({"attribution_window_seconds": 0}, {}, "attribution_window_seconds"),
        ({"attribution_min_networks": 1}, {}, "attribution_min_networks"),
        ({"attribution_gateway_share": 1.5}, {}, "attribution_gateway_share"),
        ({"attribution_gateway_share": 0}, {}, "attribution_gateway_share"),
        ({"header_timeout_seconds": 0}, {}, "header_timeout_seconds"),
        ({}, {"GATEWATCH_BODY_TIMEOUT_SECONDS": "-1"}, "body_timeout_seconds"),
        ({"max_concurrent_uploads": 0}, {}, "max_concurrent_uploads"),
        ({"max_age_seconds": 1e12}, {}, "max_age_seconds"),  # now - 31,700 years leaves the calendar
        ({"max_future_seconds": 1e12}, {}, "max_future_seconds"),
    ],
)
def test_bad_values_name_the_setting(flags: dict, env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, env=env)


def test_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("max_batch = [\n")
    with pytest.raises(SettingsError, match="bad.toml"):
        load_settings(env={}, config_file=config)
    config.write_text("unknown_key = 1\n")
    with pytest.raises(SettingsError, match="unknown_key"):
        load_settings(env={}, config_file=config)
    with pytest.raises(SettingsError, match="missing.toml"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")


def test_parse_listen() -> None:
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)


def test_control_test_list_and_attribution_settings(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        '[collector]\ncontrol_allow_net = ["127.0.0.0/8"]\ntest_list = ["KH=kh.csv"]\n'
        "attribution_window_seconds = 3600\n"
    )
    env = {
        "GATEWATCH_CONTROL_ALLOW_NET": "127.80.0.0/16, ::1/128",  # commas: IPv6 CIDRs hold colons
        "GATEWATCH_CONTROL_RESOLVER": "127.53.0.1:5353",
        "GATEWATCH_ATTRIBUTION_GATEWAY_SHARE": "0.75",
    }
    s = load_settings(
        {"test_list": ["global=g.csv", "kh=kh.csv"], "ca_file": "lab.pem"}, env=env, config_file=config
    )
    assert s.control_allow_net == ("127.80.0.0/16", "::1/128")
    assert s.control_resolver == "127.53.0.1:5353" and s.ca_file == "lab.pem"
    assert s.test_list == ("global=g.csv", "kh=kh.csv")
    assert parse_test_lists(s.test_list) == {"global": Path("g.csv"), "KH": Path("kh.csv")}
    assert (s.attribution_window_seconds, s.attribution_gateway_share) == (3600.0, 0.75)
    assert Settings().control_allow_net == ()  # nothing beyond public addresses unless the operator says so


def test_parse_resolver() -> None:
    assert parse_resolver("127.53.0.1") == ("127.53.0.1", 53)
    assert parse_resolver("127.53.0.1:5353") == ("127.53.0.1", 5353)
    assert parse_resolver("[2001:db8::1]:53") == ("2001:db8::1", 53)
    assert parse_resolver("2001:db8::1") == ("2001:db8::1", 53)


def test_unlinkable_mode_is_the_default_and_identified_mode_must_be_asked_for(tmp_path: Path) -> None:
    s = Settings()
    assert (s.accept_identified, s.identified_keys, s.enrolment) == (False, (), ENROLMENT_OPEN)
    config = tmp_path / "collector.toml"
    config.write_text('enrolment = "invite"\ninvite_codes = ["a", "b"]\ntoken_quota = 50\n')
    env = {"GATEWATCH_ACCEPT_IDENTIFIED": "true", "GATEWATCH_IDENTIFIED_KEYS": "AAAA,BBBB"}
    s = load_settings(env=env, config_file=config)
    assert (s.enrolment, s.invite_codes, s.token_quota) == (ENROLMENT_INVITE, ("a", "b"), 50)
    assert s.accept_identified and s.identified_keys == ("AAAA", "BBBB")


@pytest.mark.parametrize(
    "changes",
    [
        {"enrolment": "anyone"},
        {"enrolment": ENROLMENT_INVITE},  # without codes
        {"token_quota": 0},
        {"issuer_key_bits": 1024},
        {"pow_bits": 0},
        {"token_request_skew_seconds": 0},
    ],
)
def test_bad_token_settings_are_named(changes: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match=next(iter(changes)).split("_")[0]):
        Settings(**changes)  # type: ignore[arg-type]

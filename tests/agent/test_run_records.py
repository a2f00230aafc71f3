"""A pass's options come from agent.toml the same way for ``run``, ``daemon`` and the local page."""

from __future__ import annotations

from gatewatch.agent.addresses import Fallbacks
from gatewatch.agent.run_records import RunOptions
from gatewatch.agent.settings import AgentSettings


def test_options_follow_the_settings_and_the_command_lines_flags() -> None:
    settings = AgentSettings(
        collector_urls=["http://c.example/"], concurrency=3, max_runtime=60, max_bytes=10, upload_batch=5
    )
    options = RunOptions.from_settings(settings, resolver="127.0.0.1:53")
    assert options.collector_urls == ("http://c.example/",)
    assert [a.url for a in options.collector_addresses] == ["http://c.example/"]
    control = options.control_address  # no control_url: the collectors in turn, by the uploads' routes
    assert isinstance(control, Fallbacks) and [a.url for a in control.addresses] == ["http://c.example/"]
    assert (options.concurrency, options.max_runtime, options.max_bytes) == (3, 60, 10)
    assert options.upload and options.ipv6 and options.resolver == "127.0.0.1:53"
    assert options.web_config().dns.query_types == ("A", "AAAA")


def test_upload_off_in_the_file_or_on_the_command_line_keeps_results_local() -> None:
    assert not RunOptions.from_settings(AgentSettings(upload=False)).upload
    assert not RunOptions.from_settings(AgentSettings(upload=False), upload=True).upload  # the file wins
    assert not RunOptions.from_settings(AgentSettings(), upload=False).upload  # --no-upload


def test_ipv6_off_asks_dns_for_ipv4_only() -> None:
    assert RunOptions.from_settings(AgentSettings(ipv6=False)).web_config().dns.query_types == ("A",)

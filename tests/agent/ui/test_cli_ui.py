"""``gatewatch-agent ui`` as a volunteer starts it, the page's files in what an install ships, and the
page's server kept out of the ``run``/``daemon`` import path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from urllib.parse import urlsplit

from typer.testing import CliRunner

from gatewatch.agent.cli import app
from gatewatch.agent.ui.app import STATIC_FILES, static_file
from gatewatch.lab.scripts import AGENT, console_script

REPO = Path(__file__).resolve().parents[3]


def test_the_run_and_daemon_path_never_imports_the_page() -> None:
    """The page's server costs a volunteer's Pi nothing unless it is opened (the memory benchmark)."""
    code = (
        "import sys\n"
        "import gatewatch.agent.cli, gatewatch.agent.cli_run\n"
        "import gatewatch.agent.runner, gatewatch.agent.daemon\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gatewatch.agent.ui'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


def test_the_page_itself_stays_light() -> None:
    """The page's server is the standard library and h11: neither aiohttp nor rich comes with it."""
    code = (
        "import json, sys\n"
        "import gatewatch.agent.cli_ui, gatewatch.agent.ui.serve\n"
        "print(json.dumps([m for m in ('aiohttp', 'rich', 'scapy') if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


def test_a_listen_address_off_the_loopback_is_refused(tmp_path: Path) -> None:
    for address in ("0.0.0.0:8080", "192.168.1.10", "[::]:80"):
        result = CliRunner().invoke(
            app, ["ui", "--no-browser", "--listen", address, "--data-dir", str(tmp_path)]
        )
        assert result.exit_code == 2, result.output
        assert "loopback" in result.output


def _get(port: int | None, path: str, cookie: str = "") -> HTTPResponse:
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_the_command_prints_its_address_serves_it_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [console_script(AGENT), "ui", "--no-browser", "--data-dir", str(tmp_path / "d")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "Open this address: http://127.0.0.1:PORT/?token=..."
        url = urlsplit(line.split("Open this address: ", 1)[1].strip())
        assert url.hostname == "127.0.0.1" and url.query.startswith("token=")
        first = _get(url.port, f"/?{url.query}")
        assert first.status == 303 and first.getheader("Location") == "/"
        cookie = first.getheader("Set-Cookie").split(";")[0]
        assert _get(url.port, "/consent", cookie).status == 200
        assert _get(url.port, "/consent").status == 403  # without the cookie
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def test_the_page_files_are_package_data_and_ship_in_a_build(tmp_path: Path) -> None:
    for name in STATIC_FILES:
        assert static_file(name)  # found through importlib.resources, as an installed agent finds them
    # setuptools' build_py is the step that fills a wheel: the page's files must be in its output.
    subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
         "--build-lib", str(tmp_path / "lib")],
        cwd=REPO, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    built = tmp_path / "lib" / "gatewatch" / "agent" / "ui" / "static"
    assert sorted(p.name for p in built.iterdir()) == sorted(STATIC_FILES)

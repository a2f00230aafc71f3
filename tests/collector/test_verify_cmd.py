"""``gatewatch-collector verify`` (issue 12) on real exports of the real collector: every measurement
verifies offline with only the export and the published keys; each kind of tampering is named."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatewatch.collector.app import create_app
from gatewatch.collector.cli import cli
from gatewatch.collector.research import EXPORT_PATH
from gatewatch.collector.settings import Settings
from gatewatch.collector.verify_cmd import load_issuer_keys, verify_file
from gatewatch.core.vocabulary import (
    BAD_SIGNATURE,
    FORGED_TOKEN,
    PAYLOAD_MISMATCH,
    SCHEME_LONGTERM,
    UNKNOWN_KEY,
)

from .conftest import fetch_tokens


@pytest.fixture
async def exported(aiohttp_client, tmp_path: Path, make_measurement, sign, agent_key):
    """A collector holding two token batches and one identified (long-term) measurement; its JSON Lines,
    CSV and Parquet exports and its published keys, as files."""
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'c.db'}", accept_identified=True))
    client = await aiohttp_client(app)
    for held in await fetch_tokens(client, agent_key, 2):
        response = await client.post(
            "/api/v1/measurements", json=held.batch([make_measurement() for _ in range(3)])
        )
        assert response.status == 200
    response = await client.post("/api/v1/measurements", json={"measurements": [sign()]})
    assert response.status == 200
    files = {}
    for fmt in ("jsonl", "csv", "parquet"):
        response = await client.get(EXPORT_PATH, params={"format": fmt})
        files[fmt] = tmp_path / f"export.{fmt}"
        files[fmt].write_bytes(await response.read())
    keys = tmp_path / "issuer-keys.json"
    keys.write_bytes(await (await client.get("/api/v1/issuer-keys")).read())
    return client, files, keys


async def test_every_export_format_verifies_offline(exported) -> None:
    _, files, keys = exported
    for path in files.values():
        report = verify_file(path, load_issuer_keys(str(keys)))
        assert (report.verified, report.failures, report.unverifiable) == (6, [], 1), path


async def test_an_old_row_is_exported_in_its_old_form_marked(exported) -> None:
    _, files, _ = exported
    docs = [json.loads(line) for line in files["jsonl"].read_text().splitlines()]
    old = [doc for doc in docs if doc["signed"]["signature_scheme"] == SCHEME_LONGTERM]
    assert len(old) == 1 and old[0]["signed"] == {"signature_scheme": SCHEME_LONGTERM}


def _tamper(path: Path, index: int, change) -> str:
    lines = path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    token_docs = [i for i, doc in enumerate(docs) if "token" in doc["signed"]]
    doc = docs[token_docs[index]]
    change(doc)
    lines[token_docs[index]] = json.dumps(doc)
    path.write_text("\n".join(lines) + "\n")
    return doc["measurement_uid"]


async def test_the_command_names_each_tampered_measurement(exported, tmp_path: Path) -> None:
    client, files, keys = exported
    path = files["jsonl"]

    def edit_input(doc) -> None:
        doc["input"] = "http://elsewhere.example/"

    def edit_payload(doc) -> None:
        payload = base64.b64decode(doc["signed"]["payload"]).replace(b"x.lab", b"y.lab")
        doc["signed"]["payload"] = base64.b64encode(payload).decode()

    def edit_token(doc) -> None:
        token = bytearray(base64.b64decode(doc["signed"]["token"]))
        token[-1] ^= 1
        doc["signed"]["token"] = base64.b64encode(bytes(token)).decode()

    expected = {
        _tamper(path, 0, edit_input): PAYLOAD_MISMATCH,
        _tamper(path, 1, edit_payload): BAD_SIGNATURE,
        _tamper(path, 3, edit_token): FORGED_TOKEN,
    }
    # Offline, and with the keys fetched from the collector's URL: the same verdicts.
    url = str(client.make_url("/api/v1/issuer-keys"))
    for source in (str(keys), url):
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["verify", str(path), "--issuer-keys", source]
        )
        assert result.exit_code == 1, result.output
        failed = {
            line.split()[1]: line.rsplit(": ", 1)[1]
            for line in result.output.splitlines()
            if line.startswith("FAIL")
        }
        assert failed == expected
        assert result.output.splitlines()[-1].startswith("3 verified, 3 failed, 1 signed by a long-term key")


async def test_a_key_that_was_never_published_is_named(exported, tmp_path: Path) -> None:
    _, files, keys = exported
    published = json.loads(keys.read_text())
    published["keys"] = []
    unpublished = tmp_path / "no-keys.json"
    unpublished.write_text(json.dumps(published))
    report = verify_file(files["parquet"], load_issuer_keys(str(unpublished)))
    assert {failure.reason for failure in report.failures} == {UNKNOWN_KEY} and len(report.failures) == 6


def test_unreadable_keys_exit_2(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    result = CliRunner().invoke(
        cli, ["verify", str(tmp_path / "e.jsonl"), "--issuer-keys", str(tmp_path / "x")]
    )
    assert result.exit_code == 2

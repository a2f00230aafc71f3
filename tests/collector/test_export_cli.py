"""``gatewatch-collector export`` as a real process over a store filled through the real ingest endpoint:
daily, per-country files in every format (hive-style date=/cc= folders, read back whole by DuckDB), a
manifest that matches the files, the same filters as the HTTP export, and usage errors for bad filters."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from gatewatch.collector.app import create_app
from gatewatch.collector.cli import cli
from gatewatch.collector.settings import Settings
from gatewatch.core.measurement import Measurement, utc_now


def collector_command() -> list[str]:
    script = Path(sys.executable).parent / "gatewatch-collector"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "gatewatch.collector.cli"]


async def run_export(db: str, out: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [*collector_command(), "export", "--db", db, "--out", str(out), *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60)


def files_under(out: Path) -> list[str]:
    """The data files (the manifest is checked on its own)."""
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "_manifest.json"
    )


def jsonl_uids(path: Path) -> set[str]:
    return {json.loads(line)["measurement_uid"] for line in gzip.decompress(path.read_bytes()).splitlines()}


@pytest.fixture
async def filled(aiohttp_client, store_url: str, make_measurement, sign) -> dict[str, Measurement]:
    """Three measurements on two days in two countries, uploaded and stored."""
    now = utc_now()
    made = {
        "xl-a-today": make_measurement(probe_cc="XL", probe_asn="AS64501", measurement_start_time=now),
        "xl-b-yesterday": make_measurement(
            probe_cc="XL", probe_asn="AS64502", measurement_start_time=now - timedelta(days=1)
        ),
        "kh-today": make_measurement(probe_cc="KH", probe_asn="AS17976", measurement_start_time=now),
    }
    client = await aiohttp_client(create_app(Settings(db=store_url, accept_identified=True)))
    response = await client.post(
        "/api/v1/measurements", json={"measurements": [sign(m) for m in made.values()]}
    )
    assert [r["status"] for r in (await response.json())["results"]] == ["accepted"] * 3
    await client.close()
    return made


def day_dir(m: Measurement) -> str:
    return m.measurement_start_time.strftime("date=%Y-%m-%d")


async def test_export_writes_daily_country_files(
    store_url: str, filled: dict[str, Measurement], tmp_path
) -> None:
    out = tmp_path / "everything"
    done = await run_export(store_url, out)
    assert done.returncode == 0, done.stderr
    expected = {
        f"{day_dir(m)}/cc={m.probe_cc}/measurements.jsonl.gz": m.measurement_uid for m in filled.values()
    }
    by_file: dict[str, set[str]] = {}
    for name, uid in expected.items():
        by_file.setdefault(name, set()).add(uid)
    assert files_under(out) == sorted(by_file)
    for name, uids in by_file.items():
        assert jsonl_uids(out / name) == uids
    assert sorted(done.stdout.decode().split()) == sorted(str(out / name) for name in by_file)


async def test_export_filters_and_csv(store_url: str, filled: dict[str, Measurement], tmp_path) -> None:
    yesterday = filled["xl-b-yesterday"]
    out = tmp_path / "xl-csv"
    done = await run_export(store_url, out, "--format", "csv", "--cc", "xl")
    assert done.returncode == 0, done.stderr
    xl = [filled["xl-a-today"], yesterday]
    assert files_under(out) == sorted({f"{day_dir(m)}/cc=XL/measurements.csv.gz" for m in xl})
    uids = set()
    for path in out.rglob("*.csv.gz"):
        rows = list(csv.DictReader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
        uids |= {row["measurement_uid"] for row in rows}
        assert {row["probe_cc"] for row in rows} == {"XL"}
    assert uids == {m.measurement_uid for m in xl}

    out = tmp_path / "one-network"
    done = await run_export(store_url, out, "--asn", "64502")
    assert done.returncode == 0, done.stderr
    assert files_under(out) == [f"{day_dir(yesterday)}/cc=XL/measurements.jsonl.gz"]

    out = tmp_path / "today"
    since = filled["xl-a-today"].measurement_start_time.isoformat()
    done = await run_export(store_url, out, "--since", since)
    assert done.returncode == 0, done.stderr
    exported: set[str] = set()
    for path in out.rglob("*.jsonl.gz"):
        exported |= jsonl_uids(path)
    assert exported == {filled["xl-a-today"].measurement_uid, filled["kh-today"].measurement_uid}

    out = tmp_path / "nothing"
    done = await run_export(store_url, out, "--cc", "DE")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and (not out.exists() or files_under(out) == [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xlsx"], "--format"),
        (["--since", "yesterday"], "since"),
        (["--asn", "Comcast"], "probe_asn"),
        (["--blocking", "maybe"], "blocking"),
        (["--anomaly", "perhaps"], "anomaly"),
    ],
)
def test_bad_filters_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    db = f"sqlite:///{tmp_path / 'unused.db'}"
    result = CliRunner().invoke(cli, ["export", "--db", db, "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "unused.db").exists()  # refused before the store was opened


def test_out_is_required(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2


def test_an_unopenable_store_is_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = f"sqlite:///{blocker / 'sub' / 'x.db'}"  # a path under a regular file cannot be created
    done = subprocess.run(
        [*collector_command(), "export", "--db", db, "--out", str(tmp_path / "o")],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert not (tmp_path / "o").exists()


FILE_NAMES = {
    "jsonl": "measurements.jsonl.gz",
    "csv": "measurements.csv.gz",
    "parquet": "measurements.parquet",
    "ooni": "measurements.ooni.jsonl.gz",
}
# How DuckDB reads each format's tree in one call (hive partitioning gives the date and cc columns).
READERS = {
    "jsonl": "read_json('{root}/**/*.jsonl.gz', hive_partitioning = true)",
    "ooni": "read_json('{root}/**/*.ooni.jsonl.gz', hive_partitioning = true)",
    "parquet": "read_parquet('{root}/**/*.parquet', hive_partitioning = true)",
    "csv": "read_csv('{root}/**/*.csv.gz', hive_partitioning = true, types = {types})",
}


@pytest.mark.parametrize("fmt", list(FILE_NAMES))
async def test_every_format_is_one_hive_tree_with_a_manifest(
    fmt: str, store_url: str, filled: dict[str, Measurement], tmp_path: Path
) -> None:
    out = tmp_path / fmt
    done = await run_export(store_url, out, "--format", fmt)
    assert done.returncode == 0, done.stderr
    by_file: dict[str, set[str]] = {}
    for m in filled.values():
        by_file.setdefault(f"{day_dir(m)}/cc={m.probe_cc}/{FILE_NAMES[fmt]}", set()).add(m.measurement_uid)
    assert files_under(out) == sorted(by_file)

    manifest = json.loads((out / "_manifest.json").read_text())
    assert [entry["path"] for entry in manifest["files"]] == sorted(by_file)
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        assert entry["rows"] == len(by_file[entry["path"]]) and entry["format"] == fmt

    with duckdb.connect() as con:
        types = "{" + ", ".join(f"'{k}': '{v}'" for k, v in manifest["csv_types"].items()) + "}"
        relation = con.sql(f"SELECT * FROM {READERS[fmt].format(root=out, types=types)}")
        names = relation.columns
        rows = [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
    for row in rows:  # DuckDB's JSON reader recognises the uid as a UUID
        row["measurement_uid"] = str(row["measurement_uid"])
    assert {r["measurement_uid"] for r in rows} == {m.measurement_uid for m in filled.values()}
    for row in rows:  # the partition columns, from the folder names
        m = next(m for m in filled.values() if m.measurement_uid == row["measurement_uid"])
        assert (row["cc"], str(row["date"])) == (m.probe_cc, m.measurement_start_time.strftime("%Y-%m-%d"))
    if fmt == "ooni":
        assert {r["test_name"] for r in rows} == {"web_connectivity"}
    if fmt == "parquet":  # pandas over pyarrow: the whole tree in one call too, the manifest left out
        pandas = pytest.importorskip(
            "pandas", reason="pandas is not installed: DuckDB's reading is checked above"
        )
        pytest.importorskip("pyarrow", reason="pyarrow is not installed: DuckDB's reading is checked above")
        frame = pandas.read_parquet(out)
        assert set(frame["measurement_uid"]) == {m.measurement_uid for m in filled.values()}
        assert set(frame["cc"].astype(str)) == {m.probe_cc for m in filled.values()}
        assert list(frame["flags"].map(list)) == [[]] * len(filled) and frame["anomaly"].dtype == bool


async def test_a_rerun_keeps_the_manifest_entries_of_other_days(
    store_url: str, filled: dict[str, Measurement], tmp_path: Path
) -> None:
    out = tmp_path / "tree"
    assert (await run_export(store_url, out)).returncode == 0
    everything = json.loads((out / "_manifest.json").read_text())["files"]
    today = filled["xl-a-today"].measurement_start_time.isoformat()
    assert (await run_export(store_url, out, "--since", today)).returncode == 0
    again = json.loads((out / "_manifest.json").read_text())["files"]
    assert [(e["path"], e["rows"], e["sha256"]) for e in again] == [
        (e["path"], e["rows"], e["sha256"]) for e in everything
    ]


async def test_csv_types_survive_the_round_trip(
    store_url: str, filled: dict[str, Measurement], tmp_path: Path
) -> None:
    """Read back with the manifest's types in DuckDB, and with pandas when it is installed: flags a list of
    text, anomaly a boolean, times with their zone, blocking text (even where every row says false)."""
    out = tmp_path / "csv"
    assert (await run_export(store_url, out, "--format", "csv")).returncode == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    types = "{" + ", ".join(f"'{k}': '{v}'" for k, v in manifest["csv_types"].items()) + "}"
    with duckdb.connect() as con:
        relation = con.sql(
            f"SELECT * FROM read_csv('{out}/**/*.csv.gz', hive_partitioning = true, types = {types})"
        )
        column_types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        rows = relation.fetchall()
    assert {name: column_types[name] for name in manifest["csv_types"]} == {
        name: "TIMESTAMP WITH TIME ZONE" if kind == "TIMESTAMPTZ" else kind
        for name, kind in manifest["csv_types"].items()
    }
    flags = [row[list(column_types).index("flags")] for row in rows]
    assert flags == [[]] * len(filled)  # an empty list, not NULL or a number
    pandas = pytest.importorskip(
        "pandas", reason="pandas is not installed: DuckDB's reading is checked above"
    )
    frames = [
        pandas.read_csv(
            path,
            dtype={"blocking": "string", "technique": "string", "fingerprint_key": "string"},
            converters={"flags": json.loads},
            parse_dates=["measurement_start_time", "received_at"],
        )
        for path in out.rglob("*.csv.gz")
    ]
    frame = pandas.concat(frames)
    assert frame["anomaly"].dtype == bool and list(frame["flags"]) == [[]] * len(filled)
    assert str(frame["measurement_start_time"].dt.tz) == "UTC"

"""``GET /api/v1/test-list?cc=XX`` through the real app, on the real Citizen Lab lists in ../shared (never
copied into the repository) and on small hand-made files for the edge cases."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gatewatch.collector.app import create_app
from gatewatch.collector.settings import Settings, SettingsError
from gatewatch.collector.testlists import TestListError, TestLists

PATH = "/api/v1/test-list"
HEADER = "url,category_code,category_description,date_added,source,notes\n"


def read_csv(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def app_with(tmp_path: Path, *lists: str):
    return create_app(Settings(db=f"sqlite:///{tmp_path / 't.db'}", test_list=lists))


async def test_a_country_gets_its_list_then_the_global_rows(aiohttp_client, tmp_path, shared_data) -> None:
    kh, world = shared_data / "test-lists" / "kh.csv", shared_data / "test-lists" / "global.csv"
    client = await aiohttp_client(app_with(tmp_path, f"KH={kh}", f"global={world}"))
    response = await client.get(PATH, params={"cc": "kh"})
    assert response.status == 200
    assert response.content_type == "text/csv" and response.charset == "utf-8"
    served = read_csv(await response.text())
    own = read_csv(kh.read_text(encoding="utf-8"))
    everyone = read_csv(world.read_text(encoding="utf-8"))
    assert served[0] == own[0]  # the Citizen Lab header
    assert served[1 : len(own)] == own[1:]  # the country's rows first, unchanged and in order
    own_urls = {row[0] for row in own[1:]}
    assert served[len(own) :] == [row for row in everyone[1:] if row[0] not in own_urls]
    assert len(served) - 1 == len(own_urls | {row[0] for row in everyone[1:]})

    response = await client.get(PATH, params={"cc": "DE"})  # no list of its own: the global one
    assert response.status == 200
    assert read_csv(await response.text()) == everyone


async def test_without_a_global_list_an_unknown_country_is_404(aiohttp_client, tmp_path, shared_data) -> None:
    kh = shared_data / "test-lists" / "kh.csv"
    client = await aiohttp_client(app_with(tmp_path, f"kh={kh}"))
    assert (await client.get(PATH, params={"cc": "KH"})).status == 200
    response = await client.get(PATH, params={"cc": "DE"})
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "not_found" and "DE" in body["detail"]


async def test_no_lists_configured(aiohttp_client, tmp_path) -> None:
    client = await aiohttp_client(app_with(tmp_path))
    response = await client.get(PATH, params={"cc": "KH"})
    assert response.status == 404


@pytest.mark.parametrize("query", ["", "?cc=", "?cc=KHM", "?cc=1A", "?cc=%00%00"])
async def test_a_missing_or_bad_cc_is_400(aiohttp_client, tmp_path, query: str) -> None:
    world = tmp_path / "g.csv"
    world.write_text(HEADER + "https://a.example/,NEWS,News Media,2020-01-01,x,\n")
    client = await aiohttp_client(app_with(tmp_path, f"global={world}"))
    response = await client.get(PATH + query)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_cc"


def test_rows_with_quotes_and_a_bom_survive(tmp_path: Path) -> None:
    xa = tmp_path / "xa.csv"
    xa.write_text(
        "\ufeff"
        + HEADER
        + 'https://a.example/,NEWS,News Media,2020-01-01,x,"notes, with ""quotes""\nand a line"\n',
        encoding="utf-8",
    )
    lists = TestLists.load({"XA": xa})
    served = lists.for_country("xa")
    assert served is not None
    rows = read_csv(served.decode())
    assert rows[0][0] == "url"
    assert rows[1][5] == 'notes, with "quotes"\nand a line'
    assert lists.for_country("XB") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "header"),
        (b"address,category_code\nhttps://a.example/,NEWS\n", "header"),
        (b"url,category_code\n\xff\xfe\n", "codec"),
    ],
)
def test_an_unusable_file_is_the_operators_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(TestListError, match=problem) as raised:
        TestLists.load({"XA": path})
    assert str(path) in str(raised.value)


def test_a_missing_file_and_mismatched_columns(tmp_path: Path) -> None:
    with pytest.raises(TestListError, match="nope.csv"):
        TestLists.load({"XA": tmp_path / "nope.csv"})
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("url,category_code\nhttps://a.example/,NEWS\n")
    world = tmp_path / "g.csv"
    world.write_text(HEADER)
    with pytest.raises(TestListError, match="columns"):
        TestLists.load({"XA": narrow, "global": world})


async def test_the_app_does_not_start_with_a_bad_list(aiohttp_client, tmp_path) -> None:
    with pytest.raises(TestListError):
        await aiohttp_client(app_with(tmp_path, f"XA={tmp_path / 'nope.csv'}"))


@pytest.mark.parametrize("entry", ["KH", "=kh.csv", "KH=", "KHM=x.csv", "world=x.csv"])
def test_bad_test_list_settings(entry: str) -> None:
    with pytest.raises(SettingsError, match="test_list"):
        Settings(test_list=(entry,))


def test_a_country_given_twice() -> None:
    with pytest.raises(SettingsError, match="twice"):
        Settings(test_list=("kh=a.csv", "KH=b.csv"))

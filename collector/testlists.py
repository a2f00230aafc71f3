"""``GET /api/v1/test-list?cc=XX``: the operator's Citizen Lab test lists, as CSV.

The operator names one file per country (``--test-list KH=kh.csv``) and optionally a ``global`` one. A
country's answer is its own list followed by the global rows it does not already have (OONI's practice:
country-specific sites plus the global set); a country without a list gets the global list alone, and
without a global list it gets 404. Lists are read, checked and assembled once, on start, so a request
costs a dictionary look-up.

The files are the operator's: the collector checks only what it needs to serve them (UTF-8, a ``url``
column, the same columns in every file) and leaves the judgement of each row to the agent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gatewatch.core.vocabulary import INVALID_CC, NOT_FOUND

from .appkeys import SETTINGS_KEY
from .responses import error_response
from .settings import SettingsError, parse_test_lists

__all__ = [
    "GLOBAL",
    "TEST_LISTS_KEY",
    "TEST_LIST_PATH",
    "TestListError",
    "TestLists",
    "add_test_list_routes",
]

TEST_LIST_PATH = "/api/v1/test-list"
GLOBAL = "global"
_CC = re.compile(r"^[A-Za-z]{2}$")


class TestListError(SettingsError):
    """A configured test list cannot be served (the operator's fault; names the file)."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class _List:
    header: list[str]
    rows: list[list[str]]


def _read(path: Path) -> _List:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet export is not a column
    except (OSError, UnicodeDecodeError) as exc:
        raise TestListError(f"test list {path}: {exc}") from None
    try:
        records = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise TestListError(f"test list {path}: {exc}") from None
    if not records or records[0][0].strip().lower() != "url":
        raise TestListError(f"test list {path}: expected a header starting with 'url' (Citizen Lab CSV)")
    return _List([cell.strip() for cell in records[0]], records[1:])


def _render(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


class TestLists:
    """Every served list, assembled: country code (upper case) -> CSV bytes, plus the global one."""

    __test__ = False

    def __init__(self, by_cc: Mapping[str, bytes], global_list: bytes | None) -> None:
        self._by_cc = dict(by_cc)
        self._global = global_list

    @classmethod
    def load(cls, files: Mapping[str, Path]) -> TestLists:
        """Read ``{"KH": path, "global": path}``; raises :class:`TestListError` for an unusable file."""
        lists = {key: _read(path) for key, path in files.items()}
        global_list = lists.pop(GLOBAL, None)
        by_cc: dict[str, bytes] = {}
        for cc, own in lists.items():
            rows = list(own.rows)
            if global_list is not None:
                if global_list.header != own.header:
                    raise TestListError(
                        f"test list {files[cc]}: its columns differ from the global list's, so the two "
                        "cannot be served as one CSV"
                    )
                have = {row[0].strip() for row in own.rows}
                rows += [row for row in global_list.rows if row[0].strip() not in have]
            by_cc[cc] = _render(own.header, rows)
        rendered_global = _render(global_list.header, global_list.rows) if global_list is not None else None
        return cls(by_cc, rendered_global)

    def countries(self) -> list[str]:
        return sorted(self._by_cc)

    def for_country(self, cc: str) -> bytes | None:
        """The list for ``cc`` (any case): its own plus global rows, or the global list, or None."""
        return self._by_cc.get(cc.upper(), self._global)


TEST_LISTS_KEY = web.AppKey("gatewatch_test_lists", TestLists)


async def _test_lists_ctx(app: web.Application) -> AsyncIterator[None]:
    files = parse_test_lists(app[SETTINGS_KEY].test_list)
    app[TEST_LISTS_KEY] = await asyncio.to_thread(TestLists.load, files)
    yield


async def handle_test_list(request: web.Request) -> web.Response:
    cc = request.query.get("cc", "")
    if not _CC.match(cc):
        return error_response(400, INVALID_CC, "cc must be a two-letter country code")
    body = request.app[TEST_LISTS_KEY].for_country(cc)
    if body is None:
        return error_response(404, NOT_FOUND, f"no test list for {cc.upper()} and no global list")
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


def add_test_list_routes(app: web.Application) -> None:
    """The route, and a cleanup context that reads the configured lists on start."""
    app.cleanup_ctx.append(_test_lists_ctx)
    app.router.add_get(TEST_LIST_PATH, handle_test_list)

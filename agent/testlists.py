"""Test lists in the Citizen Lab CSV format.

The columns are ``url,category_code,category_description,date_added,source,notes``.

Reading is forgiving by design: a list is edited by hand by many people, so a bad row is reported and
skipped, never fatal, and the run goes on with the good ones.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "RowProblem",
    "TestList",
    "TestListEntry",
    "entries_from_urls",
    "parse_test_list",
    "read_test_list",
]

COLUMNS = ("url", "category_code", "category_description", "date_added", "source", "notes")
MAX_URL_LENGTH = 2048  # Measurement.input's bound
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Padding a hand-edited cell may carry. Only these: stripping Unicode whitespace (NEL, U+2028...) would
# quietly turn a URL with a control character at its end into another URL instead of reporting it.
_PADDING = " \t\r\n"


# Slotted: a pass holds one per URL of the list, thousands of them (the agent's memory goal).
@dataclass(frozen=True, slots=True)
class TestListEntry:
    __test__ = False  # not a pytest test class, despite the name

    url: str
    category_code: str = "MISC"
    category_description: str = ""
    date_added: str = ""
    source: str = ""
    notes: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True)
class RowProblem:
    line: int  # 1-based line of the file (the header is line 1)
    reason: str
    text: str = ""


@dataclass
class TestList:
    __test__ = False

    entries: list[TestListEntry] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    duplicates: int = 0
    filtered_out: int = 0

    def __len__(self) -> int:
        return len(self.entries)


def _unsafe_character(url: str) -> str | None:
    """Why ``url`` cannot be sent as it is: a space or a control character (C0, DEL, C1, or an invisible
    format character such as a bidi override) would be sent raw in the request line and the Host
    header, or hide what is measured from whoever reads the list; None when it has neither."""
    for c in url:
        if c.isspace():
            return "a space in the URL"
        if unicodedata.category(c) in ("Cc", "Cf"):
            return f"a control character (U+{ord(c):04X}) in the URL"
    return None


def _url_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    if (unsafe := _unsafe_character(url)) is not None:
        return unsafe
    if _canonical_url(url) is None:
        return "not a measurable http(s) URL"
    return None


def _canonical_url(url: str) -> str | None:
    """The URL as compared for duplicates (scheme and host case-folded, default port dropped), or None
    when it cannot be measured."""
    if len(url) > MAX_URL_LENGTH or _unsafe_character(url) is not None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    netloc = parts.hostname.lower()
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme.lower()]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def _shown(url: str) -> str:
    """The rejected URL as it may be printed: its control characters escaped (raw ones would act on the
    volunteer's terminal or log)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in url[:200])  # fmt: skip


def _wanted(code: str, include: frozenset[str], exclude: frozenset[str]) -> bool:
    if code in exclude:
        return False
    return not include or code in include


def parse_test_list(
    text: str, *, include: Iterable[str] = (), exclude: Iterable[str] = (), seen: set[str] | None = None
) -> TestList:
    """Parse CSV text. ``include``/``exclude`` are category codes (exclude wins); ``seen`` carries the
    canonical URLs of lists read before, so that several lists merge without duplicates."""
    include_set = frozenset(c.upper() for c in include)
    exclude_set = frozenset(c.upper() for c in exclude)
    seen = set() if seen is None else seen
    result = TestList()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        result.problems.append(RowProblem(1, "empty file"))
        return result
    except csv.Error as exc:
        result.problems.append(RowProblem(1, f"unreadable header: {exc}"))
        return result
    if "url" not in header:
        result.problems.append(RowProblem(1, "no url column in the header", ",".join(header)[:200]))
        return result
    index = {name: header.index(name) for name in COLUMNS if name in header}
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.problems.append(RowProblem(line, f"malformed CSV: {exc}"))
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        values = {name: row[i].strip(_PADDING) for name, i in index.items()}
        canonical = _canonical_url(values["url"])
        if canonical is None:
            result.problems.append(RowProblem(line, _url_problem(values["url"]) or "", _shown(values["url"])))
            continue
        code = (values.get("category_code") or "MISC").upper()
        if not _wanted(code, include_set, exclude_set):
            result.filtered_out += 1
            continue
        if canonical in seen:
            result.duplicates += 1
            continue
        seen.add(canonical)
        result.entries.append(
            TestListEntry(
                url=values["url"],
                category_code=code,
                category_description=values.get("category_description", ""),
                date_added=values.get("date_added", ""),
                source=values.get("source", ""),
                notes=values.get("notes", ""),
            )
        )
    return result


def read_test_list(
    path: Path, *, include: Iterable[str] = (), exclude: Iterable[str] = (), seen: set[str] | None = None
) -> TestList:
    """Read a list file; an unreadable file is one problem, not an exception."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return TestList(problems=[RowProblem(0, f"cannot read {path}: {exc.strerror or exc}")])
    return parse_test_list(text, include=include, exclude=exclude, seen=seen)


def entries_from_urls(urls: Iterable[str], *, seen: set[str] | None = None) -> TestList:
    """URLs given one by one (``--input``): same checks, category MISC."""
    seen = set() if seen is None else seen
    result = TestList()
    for position, url in enumerate(urls, start=1):
        url = url.strip(_PADDING)
        canonical = _canonical_url(url)
        if canonical is None:
            result.problems.append(RowProblem(position, _url_problem(url) or "", _shown(url)))
        elif canonical in seen:
            result.duplicates += 1
        else:
            seen.add(canonical)
            result.entries.append(TestListEntry(url=url, source="command line"))
    return result

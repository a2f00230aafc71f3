from __future__ import annotations

from pathlib import Path

from gatewatch.agent.testlists import entries_from_urls, parse_test_list, read_test_list

HEADER = "url,category_code,category_description,date_added,source,notes\n"


def test_real_lists_are_read_whole(shared_data: Path) -> None:
    kh = read_test_list(shared_data / "test-lists" / "kh.csv")
    world = read_test_list(shared_data / "test-lists" / "global.csv")
    assert (len(kh), len(world)) == (172, 1722)
    assert not kh.problems and not world.problems
    assert all(e.url.startswith(("http://", "https://")) for e in kh.entries)
    assert kh.entries[0].category_code == "HUMR" and kh.entries[0].date_added == "2016-10-06"


def test_real_lists_merge_without_duplicates_and_filter_categories(shared_data: Path) -> None:
    seen: set[str] = set()
    kh = read_test_list(shared_data / "test-lists" / "kh.csv", exclude=["lgbt", "NEWS"], seen=seen)
    world = read_test_list(shared_data / "test-lists" / "global.csv", exclude=["LGBT", "NEWS"], seen=seen)
    assert kh.filtered_out > 0 and world.filtered_out > 0
    codes = {e.category_code for e in kh.entries + world.entries}
    assert "LGBT" not in codes and "NEWS" not in codes
    urls = [e.url for e in kh.entries + world.entries]
    assert len(urls) == len(set(urls))
    assert len(urls) + kh.filtered_out + world.filtered_out + world.duplicates == 172 + 1722

    only_news = read_test_list(shared_data / "test-lists" / "kh.csv", include=["NEWS"])
    assert len(only_news) > 0 and {e.category_code for e in only_news.entries} == {"NEWS"}


def test_bad_rows_are_reported_and_skipped() -> None:
    text = HEADER + (
        "https://good.example/,NEWS,News Media,2020-01-01,me,\n"
        "ftp://files.example/,FILE,File-sharing,2020-01-01,me,\n"
        "not a url,NEWS,,,,\n"
        "http://:80/,NEWS,,,,\n"
        "\n"
        "HTTPS://GOOD.example:443/,NEWS,dup,,,\n"
        'http://quoted.example/path?a=1,HUMR,"Human Rights, Issues",2020-01-01,me,"a, b"\n'
        "http://short-row.example/\n"
    )
    result = parse_test_list(text)
    assert [e.url for e in result.entries] == [
        "https://good.example/",
        "http://quoted.example/path?a=1",
        "http://short-row.example/",
    ]
    assert [p.line for p in result.problems] == [3, 4, 5]
    assert result.duplicates == 1
    assert result.entries[1].category_description == "Human Rights, Issues"
    assert result.entries[2].category_code == "MISC"


def test_a_file_that_is_not_a_list_is_one_problem_not_an_exception(tmp_path: Path) -> None:
    assert parse_test_list("").problems[0].reason == "empty file"
    assert "no url column" in parse_test_list("a,b\n1,2\n").problems[0].reason
    missing = read_test_list(tmp_path / "absent.csv")
    assert len(missing) == 0 and "cannot read" in missing.problems[0].reason
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"url\n\xff\xfe\x00garbage\nhttp://ok.example/\n")
    assert [e.url for e in read_test_list(binary).entries] == ["http://ok.example/"]


def test_command_line_urls() -> None:
    result = entries_from_urls(["http://a.example/", "http://A.example", "mailto:x@y", "https://b.example/x"])
    assert [e.url for e in result.entries] == ["http://a.example/", "https://b.example/x"]
    assert result.duplicates == 1 and len(result.problems) == 1


def test_urls_with_control_characters_or_spaces_are_reported_and_skipped() -> None:
    bad = [
        "http://a.example/x y",  # a space inside
        "http://a.example/\x00",  # NUL
        "http://a.example/\tx",  # tab
        "http://a.example/\x1b[2Jx",  # a terminal escape
        "http://a.example/\x7f",  # DEL
        "http://a.example/\x85",  # C1 (NEL)
        "http://a.example/\u202egnp.exe",  # a bidi override hiding what is measured
        "http://a.example/\u200b",  # zero-width space
        "http://a.exa\u00a0mple/",  # no-break space in the host
        "http://a.example/\u2028",  # line separator
    ]
    text = HEADER + "".join(f'"{url}",NEWS,,,,\n' for url in bad) + "http://ok.example/%20x,NEWS,,,,\n"
    result = parse_test_list(text)
    assert [e.url for e in result.entries] == ["http://ok.example/%20x"]
    assert len(result.problems) == len(bad)
    assert all("space" in p.reason or "control character" in p.reason for p in result.problems)
    # What is shown of a rejected URL cannot act on the terminal.
    assert all(p.text.isprintable() for p in result.problems)
    assert "\\x1b" in result.problems[3].text

    given = entries_from_urls(bad + ["https://ok.example/"])
    assert [e.url for e in given.entries] == ["https://ok.example/"] and len(given.problems) == len(bad)

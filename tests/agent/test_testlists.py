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

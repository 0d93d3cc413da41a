"""The CLI's input checks and atomic output, as pure parts (issue 11, kind 8)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tailor_cli.classify import check_rows, read_rows, text_problem, write_atomically
from tailor_cli.client import CliError


def test_rows_carry_their_file_line_and_csv_row(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\nfirst,x\n"two\nlines",y\nthird,z\n')
    assert read_rows(str(tmp_path / "a.csv")) == [
        (f"{tmp_path}/a.csv line 2 (row 1)", "first"),
        (f"{tmp_path}/a.csv line 3 (row 2)", "two\nlines"),
        (f"{tmp_path}/a.csv line 5 (row 3)", "third")]
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n"two"\n')
    assert [w for w, _ in read_rows(str(tmp_path / "a.jsonl"))] == [
        f"{tmp_path}/a.jsonl line 1", f"{tmp_path}/a.jsonl line 3"]


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("  \t ", "empty"),
    ("\u200b\u2060\ufeff", "no visible character"),     # zero-width space, word joiner, BOM
    ("\u00a0\u3000", "no visible character"),            # no-break and ideographic spaces
    ("Flood \ud83d hits town", "lone surrogate"),        # a tweet cut mid-emoji
])
def test_texts_the_server_would_refuse_are_found_first(text, problem):
    assert problem in text_problem(text)


@pytest.mark.parametrize("text", ["flood", "ﻓﻴﻀﺎﻥ", "e\u0301", "🌊", "洪水 flood"])
def test_visible_texts_in_any_script_pass(text):
    assert text_problem(text) is None


def test_every_bad_row_is_named_before_anything_is_sent():
    rows = [(f"in.csv line {n + 1} (row {n})", "ok") for n in range(1, 81)]
    rows[69] = ("in.csv line 71 (row 70)", "")
    with pytest.raises(CliError, match=r"1 of 80 texts .* in.csv line 71 \(row 70\)"):
        check_rows(rows)
    for n in range(0, 80, 10):
        rows[n] = (rows[n][0], " ")
    with pytest.raises(CliError, match="9 of 80 texts.*and 4 more"):
        check_rows(rows)


def test_output_is_replaced_whole_or_left_alone(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)

    def failing() -> Iterator[str]:
        yield from ("a", "b")
        raise CliError("texts[0]: the server refused")

    with pytest.raises(CliError):
        write_atomically(target, failing())
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left
    assert write_atomically(target, iter(["x", "y"])) == 2
    assert target.read_text() == "x\ny\n" and target.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "new.jsonl"
    write_atomically(fresh, iter(["z"]))
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask

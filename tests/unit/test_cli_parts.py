"""The command line's pure parts: events, specs, config, input files, metric rows."""

from __future__ import annotations

import pytest

from tailor_cli.classify import read_texts
from tailor_cli.client import CliError, Connection, parse_sse
from tailor_cli.jobs import apply_flags
from tailor_cli.models import split_ref
from tailor_common.metrics import comparison, fmt


def test_sse_parser_reads_ids_names_and_skips_keep_alives():
    lines = ["id: 7", "event: progress", 'data: {"progress": 0.5}', "", ": keep-alive", "",
             "event: end", 'data: {"state":', 'data: "succeeded"}', ""]
    assert list(parse_sse(iter(lines))) == [
        ("progress", {"progress": 0.5, "_sse_id": "7"}), ("end", {"state": "succeeded"})]


def test_flags_lay_over_the_spec_file():
    spec = {"name": "old", "task": {"labels": [{"name": "x"}], "instruction": "keep me"},
            "distillation": {"epochs": 3, "batch_size": 8}}
    out = apply_flags(spec, {"name": "new", "labels": ["crisis:a disaster", "calm"],
                             "epochs": 5, "dataset": "ds_1", "multi_label": False,
                             "prompts": []})
    assert out["name"] == "new" and out["data"] == {"dataset_id": "ds_1"}
    assert out["task"] == {"labels": [{"name": "crisis", "description": "a disaster"},
                                      {"name": "calm", "description": ""}],
                           "instruction": "keep me"}
    assert out["distillation"] == {"epochs": 5, "batch_size": 8}


def test_connection_flags_win_over_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TAILOR_CONFIG", raising=False)
    config = tmp_path / "c.toml"
    config.write_text('url = "http://tailor:9000/"\napi_key = "from-file"\n')
    assert Connection.resolve(None, None, str(config)) == Connection("http://tailor:9000",
                                                                     "from-file")
    assert Connection.resolve("http://x", "k", str(config)) == Connection("http://x", "k")
    with pytest.raises(CliError, match="does not exist"):
        Connection.resolve(None, None, str(tmp_path / "missing.toml"))


def test_input_files_jsonl_csv_and_plain_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n"two"\n')
    (tmp_path / "a.csv").write_text('text,label\n"three, with comma",x\n')
    (tmp_path / "a.txt").write_text("four\nfive\n")
    assert read_texts(str(tmp_path / "a.jsonl")) == ["one", "two"]
    assert read_texts(str(tmp_path / "a.csv")) == ["three, with comma"]
    assert read_texts(str(tmp_path / "a.txt")) == ["four", "five"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(CliError, match="line 2"):
        read_texts(str(tmp_path / "bad.jsonl"))


def test_model_refs():
    assert split_ref("crisis") == ("crisis", None) and split_ref("crisis:3") == ("crisis", 3)
    with pytest.raises(CliError):
        split_ref("crisis:latest")


def test_comparison_is_generic_and_knows_which_way_is_better():
    rows = comparison({"teacher": {"eval": {"macro_f1": 0.5, "ece": 0.1}, "ms_per_text": 100},
                       "student": {"eval": {"macro_f1": 0.6, "ece": 0.2, "brier": 0.3},
                                   "ms_per_text": 10, "flag": True, "name": "x"}})
    by_key = {r.key: r for r in rows}
    assert [r.key for r in rows] == ["macro_f1", "ece", "brier", "ms_per_text"]
    assert by_key["macro_f1"].winner == "student" and by_key["ece"].winner == "teacher"
    assert by_key["ms_per_text"].winner == "student" and by_key["brier"].winner is None
    assert (fmt(1234567), fmt(0.12345), fmt(None), fmt(115.04)) == ("1,234,567", "0.123", "—",
                                                                    "115.0")


def test_the_delete_question_shows_its_y_n_choice(capsys, monkeypatch):
    """`[y/N]` is Rich markup unless escaped: the question lost it and read `Delete ...?`."""
    import io

    from tailor_cli.confirm import confirm_delete

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    with pytest.raises(CliError, match="not confirmed"):
        confirm_delete("dataset ds_1 'news [draft]'", yes=False)
    assert "Delete dataset ds_1 'news [draft]'? [y/N]" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    confirm_delete("dataset ds_1", yes=False)

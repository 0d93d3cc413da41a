"""Inputs a hostile review of issue 11 found still slipping through, one kind per test: NUL in
any string of a JSON body, labels in other scripts, invisible-only texts, query text that is
not UTF-8, names with nothing visible, empty ids read as "none", and the CLI's input files
(repeated keys, YAML 1.1 surprises). Each is refused with a 4xx naming the item, or accepted
the same way on every path."""

from __future__ import annotations

import json

import pytest
import yaml

from app.core.texts import has_visible_text
from tailor_cli.classify import read_rows, text_problem
from tailor_cli.client import CliError
from tailor_cli.jobs import load_spec
from worker.distill.config import ConfigError, TaskConfig

JSON = {"content-type": "application/json"}
CORPUS = ["flood water rose", "stock market rose", "fire in the city", "the team won",
          "storm killed people", "concert opened"]


def _error(resp, status: int = 422) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


def _dataset(client, records) -> str:
    resp = client.post("/datasets", json={"name": "d", "records": records})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _job(ds: str, tiny_models, labels=None, data=None, **over) -> dict:
    body = {"name": "review",
            "task": {"labels": labels or [{"name": "crisis"},
                                          {"name": "calm", "verbalizer": "none"}]},
            "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]},
            "data": {"dataset_id": ds, **(data or {})}}
    body.update(over)
    return body


# ---------------------------------------------------------------- NUL in a JSON body
@pytest.mark.parametrize("path, body, field", [
    # the review's example: a NUL in data.dataset_id was a 500 on PostgreSQL (DataError)
    ("/jobs", lambda ds, t: _job("ds\x00x", t), "data.dataset_id"),
    ("/jobs", lambda ds, t: _job(ds, t, data={"eval_dataset_id": "e\x00"}),
     "data.eval_dataset_id"),
    ("/jobs", lambda ds, t: _job(ds, t, labels=[{"name": "crisis", "description": "a\x00b"},
                                                {"name": "calm", "verbalizer": "none"}]),
     "task.labels[0].description"),
    ("/jobs", lambda ds, t: _job(ds, t, teacher={"model": t[0], "prompts": ["{text}\x00"]}),
     "teacher.prompts[0]"),
    ("/jobs", lambda ds, t: _job(ds, t, task={"labels": [{"name": "crisis"}, {"name": "calm"}],
                                               "instruction": "watch\x00"}),
     "task.instruction"),
    ("/keys", lambda ds, t: {"name": "bot\x00", "scopes": ["classify"]}, "name"),
    ("/classify", lambda ds, t: {"model": "crisis", "texts": ["ok", "a\x00b"]}, "texts[1]"),
])
def test_nul_in_any_string_of_a_json_body_is_refused_naming_it(client, tiny_models, path,
                                                                 body, field):
    ds = _dataset(client, [{"text": t} for t in CORPUS])
    err = _error(client.post(path, content=json.dumps(body(ds, tiny_models)), headers=JSON))
    assert err["code"] == "invalid_text" and err["details"] == {"field": field, "reason": "nul"}
    assert err["message"].startswith(f"{field}: NUL character at position ")
    assert client.get("/jobs").json()["jobs"] == []


def test_a_nul_escape_that_is_only_text_is_not_a_nul(client):
    # "\\u0000" in JSON is a backslash and five characters: a text like any other
    resp = client.post("/datasets", content=b'{"name": "d", "records": [{"text": "a \\\\u0000"}]}',
                       headers=JSON)
    assert resp.status_code == 201, resp.text


# ---------------------------------------------------------------- labels in other scripts
@pytest.mark.parametrize("names", [
    ["فيضان", "هادئ"],                      # Arabic
    ["洪水", "平静"],                          # CJK
    ["बाढ़", "शांत"],                           # Devanagari: vowel signs and nukta are marks
    ["inondation_côtière", "calme"],
])
def test_task_labels_in_any_script_are_accepted(names):
    assert TaskConfig(labels=[{"name": n} for n in names]).label_names == names


@pytest.mark.parametrize("names, bad, needle", [
    (["crisis", "crisis "], 1, "not end with a space"),
    ([" crisis", "calm"], 0, "start with a letter or digit"),
    (["\u200b", "calm"], 0, r"letters \(any script\)"),
    (["cri\u200bsis", "calm"], 0, r"letters \(any script\)"),
    (["Crisis", "crisis"], 1, "duplicate"),
    (["caf\u00e9", "cafe\u0301"], 1, "duplicate"),  # the same word, composed and decomposed
    (["ΣΟΦΊΑ", "σοφία"], 1, "duplicate"),
])
def test_label_names_that_would_never_match_are_refused(names, bad, needle):
    with pytest.raises(ConfigError, match=needle) as caught:
        TaskConfig(labels=[{"name": n} for n in names])
    assert caught.value.field == f"task.labels[{bad}].name"


def test_an_eval_set_labelled_in_arabic_fits_a_task_labelled_in_arabic(client, tiny_models):
    ds = _dataset(client, [{"text": t} for t in CORPUS])
    ev = _dataset(client, [{"text": t, "label": ["فيضان", "هادئ"][i % 2]}
                           for i, t in enumerate(CORPUS)])
    labels = [{"name": "فيضان", "verbalizer": "crisis"}, {"name": "هادئ", "verbalizer": "none"}]
    resp = client.post("/jobs", json=_job(ds, tiny_models, labels=labels,
                                          data={"eval_dataset_id": ev}))
    assert resp.status_code == 202, resp.text
    assert [lab["name"] for lab in resp.json()["spec"]["task"]["labels"]] == ["فيضان", "هادئ"]


@pytest.mark.parametrize("over, field", [
    ({"data": {"eval_dataset_id": ""}}, "data.eval_dataset_id"),
    ({"labels": [{"name": "crisis", "verbalizer": ""}, {"name": "calm", "verbalizer": "none"}]},
     "task.labels[0].verbalizer"),
])
def test_an_empty_id_or_answer_word_is_refused_not_read_as_none(client, tiny_models, over,
                                                                 field):
    ds = _dataset(client, [{"text": t} for t in CORPUS])
    err = _error(client.post("/jobs", json=_job(ds, tiny_models, **over)))
    assert err["message"].startswith(f"{field}: "), err
    assert client.get("/jobs").json()["jobs"] == []


# ---------------------------------------------------------------- texts with nothing visible
@pytest.mark.parametrize("text, visible", [
    ("\ufe0f", False), ("\ufe0f\ufe0e\u034f", False), ("\U000e0100", False),
    ("\u2764\ufe0f", True), ("\u3164\u2800", False), ("\ue000", True), ("e\u0301", True),
])
def test_server_and_cli_agree_on_what_is_visible(text, visible):
    assert has_visible_text(text) is visible
    assert (text_problem(text) is None) is visible


def test_a_text_of_variation_selectors_is_empty_on_every_path(client):
    text = "\ufe0f\ufe0f"
    err = _error(client.post("/datasets", json={"name": "d", "records": [{"text": text}]}))
    assert err["details"] == {"field": "records[0].text", "reason": "empty"}
    line = json.dumps({"text": text}).encode() + b"\n"
    err = _error(client.post("/datasets", content=line,
                             headers={"content-type": "application/x-ndjson"}))
    assert err["details"] == {"field": "line 1.text", "reason": "empty"}
    err = _error(client.post("/datasets", content=("text\nok\n" + text + "\n").encode(),
                             headers={"content-type": "text/csv"}))
    assert err["details"] == {"field": "row 2 (line 3).text", "reason": "empty"}


def test_cli_refuses_nul_before_sending():
    assert "NUL" in text_problem("flood\x00water")


# ---------------------------------------------------------------- query text, names
@pytest.mark.parametrize("query, shown", [
    ("name=caf%E9", "0xe9"),            # a Latin-1 form
    ("name=a%ED%A0%BDb", "0xed"),       # a lone surrogate, UTF-8-encoded
    ("name=x%FF", "0xff"),
])
def test_query_text_that_is_not_utf8_is_refused_not_replaced(client, query, shown):
    err = _error(client.post(f"/datasets?{query}", content=b'{"text": "a"}\n',
                             headers={"content-type": "application/x-ndjson"}))
    assert err["details"] == {"field": "query.name"} and shown in err["message"]
    assert client.get("/datasets").json()["datasets"] == []


def test_utf8_query_text_is_kept(client):
    resp = client.post("/datasets?name=caf%C3%A9%20%F0%9F%8C%8A", content=b'{"text": "a"}\n',
                       headers={"content-type": "application/x-ndjson"})
    assert resp.status_code == 201 and resp.json()["name"] == "café 🌊"


@pytest.mark.parametrize("name", ["   ", "\u200b", "ops\nbot", "\ufe0f"])
def test_key_names_follow_the_name_rule(client, name):
    err = _error(client.post("/keys", json={"name": name, "scopes": ["classify"]}))
    assert err["message"].startswith("name: "), err
    assert client.get("/keys").status_code == 200  # nothing created: auth is still off


# ---------------------------------------------------------------- the CLI's input files
@pytest.mark.parametrize("content, line", [
    ('{"text": "a"}\n{"text": "b", "text": "c"}\n', 2),
    ('{"text": "a", "meta": {"k": 1, "k": 2}}\n', 1),
    ('\n\n{"label": "x", "label": "y", "text": "z"}\n', 3),
])
def test_cli_jsonl_with_a_repeated_key_is_refused_naming_the_line(tmp_path, content, line):
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    with pytest.raises(CliError, match=rf"in.jsonl line {line}: key '\w+' appears more than "):
        read_rows(str(path))


@pytest.mark.parametrize("content, line", [
    ("name: a\ndistillation:\n  epochs: 3\n  epochs: 30\n", 4),
    ('{"name": "a", "name": "b"}', 1),
    ("task:\n  labels:\n    - name: crisis\n      name: calm\n", 4),
])
def test_cli_spec_with_a_repeated_key_is_refused_on_one_line(tmp_path, content, line):
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    with pytest.raises(CliError) as caught:
        load_spec(path)
    assert f"line {line} column" in caught.value.message
    assert "appears more than once" in caught.value.message
    assert "\n" not in caught.value.message


def test_cli_spec_reads_label_names_and_dates_as_written(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: a\ntask:\n  labels: [{name: yes}, {name: no}, {name: off}]\n"
                    "  multi_label: true\n  instruction: 2024-01-01\n"
                    "defaults: &d {epochs: 3}\ndistillation:\n  <<: *d\n  epochs: 5\n")
    spec = load_spec(path)
    assert [lab["name"] for lab in spec["task"]["labels"]] == ["yes", "no", "off"]
    assert spec["task"]["multi_label"] is True
    assert spec["task"]["instruction"] == "2024-01-01"
    assert spec["distillation"] == {"epochs": 5}  # a merge key may be overridden
    json.dumps(spec)  # everything in it can be sent


def test_cli_spec_syntax_errors_are_one_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("task: [1,\n")
    with pytest.raises(CliError) as caught:
        load_spec(path)
    assert "\n" not in caught.value.message and "line 2 column" in caught.value.message
    assert yaml.safe_load("a: yes") == {"a": True}  # the stock loader is left as it was

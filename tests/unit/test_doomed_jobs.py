"""Jobs that cannot succeed are refused at submission (422 naming the field, a stable code),
not accepted and failed minutes later; what a submission cannot see fails the engine's first
step with the same code (issue 11, kind 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.core.db import session_scope
from app.models import Job
from tests.integration.report import record_input
from worker.distill.config import EngineConfig
from worker.distill.engine import DistillData, EngineError, run
from worker.distill.spec import complete_spec, load_config

pytestmark = pytest.mark.reliability

CORPUS = ["flood water rose", "stock market rose", "fire in the city", "the team won",
          "storm killed people", "concert opened"]
WORDS = "labels that share a first token for the teacher's tokenizer"
REAL_CACHE = Path(__file__).resolve().parents[2] / "var" / "cache"


def _dataset(client, records) -> str:
    resp = client.post("/datasets", json={"name": "d", "records": records})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _texts(texts):
    return [{"text": t} for t in texts]


def _body(ds, tiny_models, labels=None, **over):
    body = {"name": "doomed",
            "task": {"labels": labels or [{"name": "crisis"},
                                          {"name": "calm", "verbalizer": "none"}]},
            "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]},
            "data": {"dataset_id": ds}}
    for key, value in over.items():
        body[key] = {**body.get(key, {}), **value}
    return body


def _jobs() -> int:
    with session_scope() as db:
        return db.scalar(select(func.count()).select_from(Job))


def _refused(client, body, code, field):
    before = _jobs()
    resp = client.post("/jobs", json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert err["message"].startswith(field + ":"), err
    assert err["details"] == {"field": field}
    assert _jobs() == before  # nothing queued
    return err["message"]


@pytest.fixture
def corpus_id(client):
    return _dataset(client, _texts(CORPUS))


# ---------------------------------------------------------------- answer words
@pytest.mark.parametrize("labels, field, needle", [
    # the example: "flood" and "flood over" both begin with the token "flood"
    ([{"name": "flood"}, {"name": "flood_over"}], "task.labels[1]", "'flood'"),
    ([{"name": "fire"}, {"name": "fire_storm"}, {"name": "calm", "verbalizer": "none"}],
     "task.labels[1]", "'fire'"),
    ([{"name": "a", "verbalizer": "rescue"}, {"name": "b", "verbalizer": "rescue team"}],
     "task.labels[1]", "'rescue'"),
])
def test_labels_the_teacher_cannot_tell_apart_are_refused(client, corpus_id, tiny_models,
                                                          labels, field, needle):
    msg = _refused(client, _body(corpus_id, tiny_models, labels), "verbalizer_collision", field)
    assert needle in msg and "verbalizer" in msg
    record_input(WORDS, ["POST /jobs"], [" / ".join(lab["name"] for lab in labels)],
                 [f"422 verbalizer_collision naming {field}, no job created"])


def test_answer_outside_the_teachers_vocabulary_is_refused(client, corpus_id, tiny_models):
    msg = _refused(client, _body(corpus_id, tiny_models, [{"name": "crisis"}, {"name": "calm"}]),
                   "verbalizer_unexpressible", "task.labels[1]")
    assert "'calm'" in msg
    # A verbalizer it knows makes the same task acceptable.
    ok = client.post("/jobs", json=_body(corpus_id, tiny_models, [
        {"name": "crisis"}, {"name": "calm", "verbalizer": "none"}]))
    assert ok.status_code == 202, ok.text
    record_input(WORDS, ["POST /jobs"], ["calm (not in the teacher's vocabulary)"],
                 ["422 verbalizer_unexpressible; with a known verbalizer 202"])


def test_multi_label_answers_are_yes_no_so_shared_first_tokens_are_fine(client, corpus_id,
                                                                         tiny_models):
    body = _body(corpus_id, tiny_models, [{"name": "flood"}, {"name": "flood_over"}],
                 task={"multi_label": True})
    assert client.post("/jobs", json=body).status_code == 202
    record_input(WORDS, ["POST /jobs"], ["flood / flood_over, multi-label"],
                 ["202: multi-label answers are yes/no per label"])


def test_black_box_teacher_answers_that_begin_alike_are_refused(client, corpus_id, tiny_models,
                                                                monkeypatch):
    from app.core.config import get_settings
    from tests.support import TEST_MODEL_SOURCES as support_sources

    teacher = "openai+http://127.0.0.1:9/v1?model=m"  # never contacted at submission
    monkeypatch.setenv("TAILOR_MODEL_SOURCES", f"{support_sources},openai+http://127.0.0.1:9")
    get_settings.cache_clear()
    for labels in ([{"name": "flood"}, {"name": "flood_over"}],
                   [{"name": "no_help", "verbalizer": "no"}, {"name": "none"}]):
        _refused(client, _body(corpus_id, tiny_models, labels, teacher={"model": teacher}),
                 "verbalizer_collision", "task.labels[1]")
    ok = _body(corpus_id, tiny_models, [{"name": "flood"}, {"name": "calm"}],
               teacher={"model": teacher})
    assert client.post("/jobs", json=ok).status_code == 202
    record_input(WORDS, ["POST /jobs (black-box teacher)"],
                 ["flood / flood_over", "no / none"], ["422 verbalizer_collision"])


def test_default_teacher_refuses_flood_and_flood_over(client, corpus_id, tiny_models,
                                                      monkeypatch):
    """The issue's example on the real offline teacher (SmolLM2's tokenizer), when fetched."""
    from app.core.config import DEFAULT_TEACHER, get_settings
    from worker.distill.sources import on_disk

    if not on_disk(DEFAULT_TEACHER, REAL_CACHE / "models"):
        pytest.skip("the offline default teacher is not fetched (make fetch)")
    monkeypatch.setenv("TAILOR_CACHE_DIR", str(REAL_CACHE))
    get_settings.cache_clear()
    body = _body(corpus_id, tiny_models, [{"name": "flood"}, {"name": "flood_over"}])
    del body["teacher"]  # the service default
    _refused(client, body, "verbalizer_collision", "task.labels[1]")
    body["task"]["labels"][1] = {"name": "flood_over", "verbalizer": "overflow"}
    assert client.post("/jobs", json=body).status_code == 202
    record_input(WORDS, ["POST /jobs (default SmolLM2 teacher)"], ["flood / flood_over"],
                 ["422 verbalizer_collision; verbalizer 'overflow' 202"])


# ---------------------------------------------------------------- the corpus
@pytest.mark.parametrize("texts", [
    ["flood", "calm day"],                                   # the 2-text dataset
    ["same text"] * 9,                                       # one distinct text
    ["fire", " fire ", "fire\n", "flood", "storm", "   "],   # 3 distinct after stripping
])
def test_corpus_too_small_to_split_is_refused(client, tiny_models, texts):
    ds = _dataset(client, [{"text": t} for t in texts if t.strip()] or _texts(["x"]))
    msg = _refused(client, _body(ds, tiny_models), "corpus_too_small", "data.dataset_id")
    assert "at least 4" in msg
    record_input("corpora too small to split", ["POST /jobs"],
                 [f"{len(texts)} texts, {len({t.strip() for t in texts if t.strip()})} distinct"],
                 ["422 corpus_too_small naming data.dataset_id, no job created"])


def test_four_distinct_texts_are_enough(client, tiny_models):
    ds = _dataset(client, _texts(["fire", "flood", "storm", "market", "fire"]))
    assert client.post("/jobs", json=_body(ds, tiny_models)).status_code == 202


# ---------------------------------------------------------------- eval sets
@pytest.mark.parametrize("multi, bad, code, needle", [
    (False, [], "eval_label_invalid", "records[1] has 0 labels"),       # the example
    (False, "fire", "eval_label_unknown", "records[1] has label 'fire'"),
    (False, ["crisis", "calm"], "eval_label_invalid", "records[1] has 2 labels"),
    (True, ["crisis", "fire"], "eval_label_unknown", "records[1] has label 'fire'"),
])
def test_eval_rows_the_evaluation_cannot_score_are_refused(client, corpus_id, tiny_models,
                                                            multi, bad, code, needle):
    ev = _dataset(client, [{"text": "earthquake killed hundreds", "label": "crisis"},
                           {"text": "football team won", "label": bad},
                           {"text": "concert opened", "label": "calm"}])
    body = _body(corpus_id, tiny_models, task={"multi_label": multi},
                 data={"eval_dataset_id": ev})
    msg = _refused(client, body, code, "data.eval_dataset_id")
    assert needle in msg
    record_input("eval rows whose labels are empty, unknown or of the wrong type",
                 ["POST /jobs"], [f"{json.dumps(bad)} ({'multi' if multi else 'single'}-label)"],
                 [f"422 {code} naming data.eval_dataset_id and the row"])


def test_eval_rows_of_either_shape_that_fit_the_task_are_accepted(client, corpus_id,
                                                                   tiny_models):
    single = _dataset(client, [{"text": "flood", "label": "crisis"},
                               {"text": "match", "label": ["calm"]}, {"text": "unlabeled"}])
    assert client.post("/jobs", json=_body(corpus_id, tiny_models, data={
        "eval_dataset_id": single})).status_code == 202
    multi = _dataset(client, [{"text": "flood", "label": ["crisis", "calm"]},
                              {"text": "match", "label": []}])  # none of the labels applies
    assert client.post("/jobs", json=_body(corpus_id, tiny_models, task={"multi_label": True},
                                           data={"eval_dataset_id": multi})).status_code == 202


# ---------------------------------------------------------------- model folders
def _broken_copy(src: str, dst: Path, how: str) -> str:
    shutil.copytree(src, dst)
    if how == "no-tokenizer-files":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (dst / name).unlink(missing_ok=True)
    elif how == "corrupt-tokenizer":
        (dst / "tokenizer.json").write_text("{not json")
    elif how == "needs-sentencepiece":  # a slow tokenizer from a spiece.model, no tokenizer.json
        (dst / "tokenizer.json").unlink()
        cfg = json.loads((dst / "tokenizer_config.json").read_text())
        (dst / "tokenizer_config.json").write_text(json.dumps(
            {**cfg, "tokenizer_class": "AlbertTokenizer"}))
        (dst / "spiece.model").write_bytes(b"\x00not a sentencepiece model")
    elif how == "unknown-architecture":
        (dst / "config.json").write_text('{"model_type": "no-such-architecture"}')
    return str(dst)


@pytest.mark.parametrize("how", ["no-tokenizer-files", "corrupt-tokenizer", "needs-sentencepiece",
                                 "unknown-architecture"])
def test_student_folder_that_cannot_load_is_refused(client, corpus_id, tiny_models, tmp_path,
                                                    how):
    student = _broken_copy(tiny_models[1], tmp_path / "student", how)
    msg = _refused(client, _body(corpus_id, tiny_models, student={"model": student}),
                   "student_unloadable", "student.model")
    assert "tokenizer cannot be loaded" in msg
    record_input("model folders that cannot be loaded", ["POST /jobs"], [f"student: {how}"],
                 ["422 student_unloadable naming student.model"])


def test_teacher_folder_that_cannot_load_is_refused(client, corpus_id, tiny_models, tmp_path):
    teacher = _broken_copy(tiny_models[0], tmp_path / "teacher", "corrupt-tokenizer")
    _refused(client, _body(corpus_id, tiny_models, teacher={"model": teacher}),
             "teacher_unloadable", "teacher.model")


# ---------------------------------------------------------------- label lists
@pytest.mark.parametrize("task, field", [
    ({"labels": [{"name": "crisis"}]}, "task.labels"),
    ({"labels": [{"name": "crisis"}], "multi_label": True}, "task.labels"),
    ({"labels": [{"name": "crisis"}, {"name": "Crisis"}]}, "task.labels[1].name"),
    ({"labels": [{"name": "a", "verbalizer": "fire"}, {"name": "b", "verbalizer": " Fire"}]},
     "task.labels[1].verbalizer"),
])
def test_label_lists_with_one_entry_or_duplicates_are_refused(client, corpus_id, tiny_models,
                                                              task, field):
    resp = client.post("/jobs", json=_body(corpus_id, tiny_models, **{"task": task}))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"].startswith(field)
    record_input("a label list with one entry or duplicates", ["POST /jobs"],
                 [json.dumps([lab.get("verbalizer", lab["name"]) for lab in task["labels"]])],
                 [f"422 naming {field}"])


# ---------------------------------------------------------------- the engine's first step
def test_engine_checks_models_before_any_teacher_work(tmp_path, tiny_models):
    """A model not on disk at submission (e.g. fetched by the worker) meets the same rule as
    the engine's first step: nothing is annotated."""
    steps: list[str] = []
    cfg = EngineConfig.from_dict({
        "task": {"labels": [{"name": "flood"}, {"name": "flood_over"}]},
        "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]}})
    with pytest.raises(EngineError) as err:
        run(cfg, DistillData(CORPUS), workdir=tmp_path / "w", cache_dir=tmp_path / "c",
            progress=lambda state, phase, *_: steps.append(phase))
    assert err.value.code == "verbalizer_collision"
    assert "annotate" not in steps and "load-teacher" not in steps
    cfg = load_config(complete_spec({"task": {"labels": [{"name": "crisis"}, {"name": "calm"}]}},
                                    teacher_model=tiny_models[0], student_model=tiny_models[1]))
    with pytest.raises(EngineError) as err:
        run(cfg, DistillData(CORPUS, ["x"], [[]]), workdir=tmp_path / "w2",
            cache_dir=tmp_path / "c")
    assert err.value.code == "eval_label_invalid"
    record_input(WORDS, ["engine first step (model not on disk at submission)"],
                 ["flood / flood_over"], ["verbalizer_collision before any teacher work"])

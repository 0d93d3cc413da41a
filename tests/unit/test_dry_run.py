"""POST /jobs?dry_run=true: the checks of a real submission, an estimate, and nothing created
(embedded mode: SQLite, in-process app)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.db import session_scope
from app.jobs import estimate
from app.models import Job, JobEvent, JobState
from app.models.base import new_id, utcnow
from tests.fixtures.tiny import corpus
from tests.support import job_body
from worker.distill.config import EngineConfig
from worker.distill.strategies import get_strategy

EVAL = [{"text": "Floods cut off the valley", "label": "crisis"},
        {"text": "The band played on", "label": "calm"},
        {"text": "Unlabeled line"}]


def _dataset(client: TestClient, records: list[dict[str, str]], **headers: str) -> str:
    resp = client.post("/datasets", json={"name": "d", "records": records}, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _counts() -> tuple[int, int]:
    with session_scope() as db:
        return (db.scalar(select(func.count()).select_from(Job)) or 0,
                db.scalar(select(func.count()).select_from(JobEvent)) or 0)


@pytest.fixture
def body(client, tiny_models):
    ds = _dataset(client, [{"text": t} for t in corpus(40)])
    ev = _dataset(client, EVAL)
    return job_body("crisis", ds, *tiny_models, eval_dataset_id=ev)


def test_dry_run_estimates_and_creates_nothing(client, body, tiny_models):
    before = _counts()
    resp = client.post("/jobs?dry_run=true", json=body, headers={"Idempotency-Key": "k1"})
    assert resp.status_code == 200, resp.text
    assert "location" not in resp.headers
    answer = resp.json()
    assert answer["dry_run"] is True
    est = answer["estimate"]
    cfg = EngineConfig.from_dict({k: body[k] for k in ("task", "teacher", "student",
                                                       "distillation")})
    assert est["texts"] == 40 + 2  # the corpus and the labeled eval rows
    assert est["teacher_calls"] == get_strategy("adaptive").expected_teacher_calls(cfg, 42)
    assert est["training_steps"] > 0
    assert set(est["phases"]) == {"annotate", "distill", "evaluate"}
    assert all(p["seconds"] > 0 for p in est["phases"].values())
    assert est["seconds"] == pytest.approx(sum(p["seconds"] for p in est["phases"].values()),
                                           abs=0.2)
    assert est["basis"] == "documented default"  # no job has run here
    assert est["rates"]["teacher_calls_per_s"] == {
        "value": estimate.DEFAULT_TEACHER_CALLS_PER_S, "basis": "documented default"}
    assert _counts() == before, "no job row, no event"
    # No idempotency record either: the same key with another body is a fresh submission.
    other = {**body, "name": "crisis-two"}
    real = client.post("/jobs", json=other, headers={"Idempotency-Key": "k1"})
    assert real.status_code == 202, real.text
    assert _counts()[0] == before[0] + 1


def test_dry_run_refuses_a_used_idempotency_key_as_a_submission_would(client, body):
    """A key already spent on another body: the real submission answers 422
    idempotency_mismatch, so the dry run of it must not promise a 202."""
    assert client.post("/jobs", json=body, headers={"Idempotency-Key": "k2"}).status_code == 202
    other = {**body, "name": "crisis-two"}
    real = client.post("/jobs", json=other, headers={"Idempotency-Key": "k2"})
    dry = client.post("/jobs?dry_run=true", json=other, headers={"Idempotency-Key": "k2"})
    assert real.status_code == dry.status_code == 422
    assert real.json() == dry.json()
    assert dry.json()["error"]["code"] == "idempotency_mismatch"
    same = client.post("/jobs?dry_run=true", json=body, headers={"Idempotency-Key": "k2"})
    assert same.status_code == 200 and same.json()["dry_run"] is True


def test_more_texts_and_epochs_cost_more(client, body, tiny_models):
    small = client.post("/jobs?dry_run=true", json=body).json()["estimate"]
    big_ds = _dataset(client, [{"text": t} for t in corpus(400)])
    bigger = {**body, "data": {**body["data"], "dataset_id": big_ds},
              "distillation": {**body["distillation"], "epochs": 6}}
    big = client.post("/jobs?dry_run=true", json=bigger).json()["estimate"]
    assert big["teacher_calls"] > small["teacher_calls"]
    assert big["training_steps"] > small["training_steps"]
    assert big["phases"]["annotate"]["seconds"] > small["phases"]["annotate"]["seconds"]
    assert big["phases"]["distill"]["seconds"] > small["phases"]["distill"]["seconds"]


@pytest.mark.parametrize("change, status, code", [
    ({"data": {"dataset_id": "ds_0000000000000000"}}, 422, "dataset_not_found"),
    ({"task": {"labels": [{"name": "flood"}, {"name": "flood_over"}]},
      "data": {"eval_dataset_id": None}}, 422, "verbalizer_collision"),
    ({"task": {"labels": [{"name": "flood"}, {"name": "calm"}]}}, 422, "eval_label_unknown"),
    ({"teacher": {"model": "/etc"}}, 422, "model_source_not_allowed"),
    ({"distillation": {"epochs": 0}}, 422, None),
    ({"name": "Not A Name"}, 422, None),
])
def test_errors_are_the_ones_a_real_submission_gives(client, body, change, status, code):
    bad = {**body}
    for key, value in change.items():
        bad[key] = value if not isinstance(value, dict) else {**body.get(key, {}), **value}
    before = _counts()
    dry = client.post("/jobs?dry_run=true", json=bad)
    real = client.post("/jobs", json=bad)
    assert dry.status_code == real.status_code == status, (dry.text, real.text)
    assert dry.json() == real.json()
    if code:
        assert dry.json()["error"]["code"] == code
    assert _counts() == before


def test_corpus_too_small_is_refused_in_a_dry_run(client, tiny_models):
    ds = _dataset(client, [{"text": t} for t in corpus(3)])
    resp = client.post("/jobs?dry_run=true", json=job_body("crisis", ds, *tiny_models))
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "corpus_too_small"


def test_dry_run_must_be_a_boolean(client, body):
    resp = client.post("/jobs?dry_run=perhaps", json=body)
    assert resp.status_code == 422
    assert "dry_run" in resp.text


def _finished_job(spec: dict, metrics: dict) -> None:
    with session_scope() as db:
        db.add(Job(id=new_id("job"), name=spec["name"], state=JobState.SUCCEEDED,
                   progress=1.0, spec=spec, metrics=metrics, attempts=1, max_attempts=3,
                   owner="local", finished_at=utcnow()))
        db.commit()


def test_rates_come_from_finished_jobs_with_the_same_models(client, body, tiny_models):
    teacher, student = tiny_models
    spec = {"name": "old", "teacher": {"model": teacher}, "student": {"model": student}}
    _finished_job(spec, {
        "annotation": {"texts_scored": 300, "seconds": 30.0},  # 10 calls/s
        "teacher": {"load_seconds": 2.0},
        "phases": {"annotate": {"seconds": 30.0},
                   "easy": {"steps": 20, "seconds": 4.0}, "full": {"steps": 80, "seconds": 16.0}},
        "student": {"ms_per_text": 4.0}})
    # Another teacher's run says nothing about this one's speed.
    _finished_job({**spec, "teacher": {"model": "pypi://other-teacher/x.gguf"}},
                  {"annotation": {"texts_scored": 10, "seconds": 1000.0}})
    est = client.post("/jobs?dry_run=true", json=body).json()["estimate"]
    assert est["basis"] == "measured on this worker class"
    rates = {k: v["value"] for k, v in est["rates"].items()}
    assert rates == {"teacher_calls_per_s": 10.0, "teacher_load_s": 2.0,
                     "student_steps_per_s": 5.0, "student_ms_per_text": 4.0}
    annotate = 2.0 + (est["teacher_calls"] + estimate.LATENCY_BATCH) / 10.0
    assert est["phases"]["annotate"]["seconds"] == pytest.approx(annotate, abs=0.1)
    assert est["phases"]["distill"]["seconds"] == pytest.approx(
        est["training_steps"] / 5.0 + 40 * 0.004, abs=0.1)


def test_another_keys_dataset_answers_like_an_absent_one(embedded, monkeypatch, tiny_models):
    from app.core import security
    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("TAILOR_API_KEYS", "dry-a:train,dry-b:train")
    get_settings.cache_clear()
    security._env_keys.cache_clear()
    a, b = ({"Authorization": "Bearer dry-a"}, {"Authorization": "Bearer dry-b"})
    with TestClient(create_app()) as client:
        theirs = _dataset(client, [{"text": t} for t in corpus(12)], **a)
        absent = "ds_0000000000000000"
        foreign = client.post("/jobs?dry_run=true", headers=b,
                              json=job_body("crisis", theirs, *tiny_models))
        missing = client.post("/jobs?dry_run=true", headers=b,
                              json=job_body("crisis", absent, *tiny_models))
        assert foreign.status_code == missing.status_code == 422
        assert foreign.text == missing.text.replace(absent, theirs)
        own = client.post("/jobs?dry_run=true", headers=a,
                          json=job_body("crisis", theirs, *tiny_models))
        assert own.status_code == 200, own.text
        reader = client.post("/jobs?dry_run=true", headers={"Authorization": "Bearer nope"},
                             json=job_body("crisis", theirs, *tiny_models))
        assert reader.status_code == 401


def test_the_teacher_rate_comes_from_jobs_in_the_same_precision(client, body, tiny_models):
    """A bfloat16 teacher scores about 2.6x the texts/s of a float32 one: an estimate for
    one is never measured on the other."""
    teacher, student = tiny_models
    for precision, seconds in (("bfloat16", 10.0), ("float32", 26.0)):
        _finished_job({"name": precision, "student": {"model": student},
                       "teacher": {"model": teacher, "precision": precision}},
                      {"annotation": {"texts_scored": 260, "seconds": seconds},
                       "teacher": {"precision": precision}})

    def rate(precision: str) -> tuple[float, str]:
        body["teacher"] = {**body["teacher"], "precision": precision}
        resp = client.post("/jobs?dry_run=true", json=body)
        assert resp.status_code == 200, resp.text
        got = resp.json()["estimate"]["rates"]["teacher_calls_per_s"]
        return got["value"], got["basis"]

    assert rate("bfloat16") == (26.0, estimate.MEASURED)
    assert rate("float32") == (10.0, estimate.MEASURED)
    # "auto" is whichever these workers resolve it to: only jobs that asked "auto" know.
    assert rate("auto") == (estimate.DEFAULT_TEACHER_CALLS_PER_S, estimate.DOCUMENTED)
    # A black box ignores the setting (its jobs record float32): any of its jobs measures it.
    ran = {"teacher": {"precision": "float32"}}
    assert estimate.same_precision({"teacher": {"precision": "bfloat16"}}, ran, None)
    assert not estimate.same_precision({"teacher": {"precision": "bfloat16"}}, ran, "bfloat16")

"""Bad input gets a 4xx JSON error naming the problem, and leaves nothing behind."""

import json

import pytest
from sqlalchemy import func, select

from app.core.db import session_scope
from app.models import Dataset, DatasetRecord, Job

RECORDS = [{"text": "flood water rose"}, {"text": "stock market rose"}]
# Enough distinct texts to split into training and held-out texts (app.jobs.checks).
CORPUS = RECORDS + [{"text": "fire in the city"}, {"text": "the team won"}]


def _counts():
    with session_scope() as db:
        return tuple(db.scalar(select(func.count()).select_from(t))
                     for t in (Dataset, DatasetRecord, Job))


def _error(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


@pytest.fixture
def dataset_id(client):
    return client.post("/datasets", json={"name": "d", "records": CORPUS}).json()["id"]


def _job(dataset_id, tiny_models, **over):
    # Answer words the tiny teacher's vocabulary holds (app.jobs.checks refuses others).
    body = {"name": "crisis", "task": {"labels": [{"name": "crisis"},
                                                  {"name": "calm", "verbalizer": "none"}]},
            "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]},
            "data": {"dataset_id": dataset_id}}
    body.update(over)
    return body


def test_dataset_upload_json_and_files(client):
    r = client.post("/datasets", json={"name": "d", "records": RECORDS + [
        {"text": "fire", "label": "crisis"}]})
    assert r.status_code == 201
    assert r.json()["rows"] == 3 and r.json()["labeled_rows"] == 1
    jsonl = "\n".join(json.dumps(x) for x in RECORDS).encode()
    r = client.post("/datasets", files={"file": ("x.jsonl", jsonl)}, data={"name": "j"})
    assert r.status_code == 201 and r.json()["name"] == "j" and r.json()["rows"] == 2
    csv_bytes = b"text,label\nflood in the city,crisis\nconcert,calm\n"
    r = client.post("/datasets", files={"file": ("x.csv", csv_bytes)})
    assert r.status_code == 201 and r.json()["labels"] == ["calm", "crisis"]
    r = client.post("/datasets?name=raw", content=jsonl,
                    headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 201 and r.json()["sha256"] == client.post(
        "/datasets", json={"name": "d2", "records": RECORDS}).json()["sha256"]


@pytest.mark.parametrize("kwargs, status, needle", [
    ({"content": b'{"name": "d", "records": [', "headers": {"content-type": "application/json"}},
     400, "malformed JSON"),
    ({"json": {"name": "d", "records": []}}, 422, "no rows"),
    ({"json": {"name": "d", "records": [{"label": "x"}]}}, 422, "records[0].text"),
    ({"json": {"name": "d", "records": [{"text": "   "}]}}, 422, "records[0].text"),
    ({"files": {"file": ("x.jsonl", b'{"text": "caf\xe9"}\n')}}, 422, "UTF-8"),
    ({"files": {"file": ("x.csv", b"body\nhello\n")}}, 422, "text"),
    ({"files": {"file": ("x.jsonl", b'{"text": "ok"}\nnot json\n')}}, 422, "line 2"),
    ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
])
def test_bad_datasets_are_refused_and_leave_nothing(client, kwargs, status, needle):
    before = _counts()
    err = _error(client.post("/datasets", **kwargs), status)
    assert needle in err["message"]
    assert _counts() == before


def test_oversized_body_is_413(client, monkeypatch):
    from app.core.config import get_settings

    limit = get_settings().max_body_bytes
    big = b'{"name": "d", "records": [{"text": "' + b"a" * (limit + 10) + b'"}]}'
    before = _counts()
    err = _error(client.post("/datasets", content=big,
                             headers={"content-type": "application/json"}), 413)
    assert err["code"] == "payload_too_large"
    assert _counts() == before


def test_too_many_rows_is_413(client, monkeypatch):
    monkeypatch.setenv("TAILOR_MAX_DATASET_ROWS", "3")
    from app.core.config import get_settings

    get_settings.cache_clear()
    _error(client.post("/datasets", json={"name": "d", "records": RECORDS * 2}), 413)


@pytest.mark.parametrize("over, status, field", [
    ({"task": {"labels": [{"name": "crisis"}]}}, 422, "task.labels"),
    ({"task": {"labels": [{"name": "crisis"}, {"name": "crisis"}]}}, 422, "task.labels[1].name"),
    ({"teacher": {"model": "s3://bucket/x"}}, 422, "teacher.model"),
    ({"student": {"model": "/no/such/model"}}, 422, "student.model"),
    ({"teacher": {"model": "pypi://pkg"}}, 422, "teacher.model"),
    ({"teacher": {"prompts": ["no placeholder"]}}, 422, "teacher.prompts[0]"),
    ({"name": "Bad Name!"}, 422, "name"),
    ({"data": {"dataset_id": "ds_nope"}}, 422, "data.dataset_id"),
    ({"distillation": {"strategy": "magic"}}, 422, "distillation.strategy"),
    ({"surprise": 1}, 422, "surprise"),
])
def test_bad_jobs_are_refused_and_leave_nothing(client, dataset_id, tiny_models, over, status,
                                                field):
    body = _job(dataset_id, tiny_models)
    for key, value in over.items():
        body[key] = {**body[key], **value} if isinstance(body.get(key), dict) else value
    before = _counts()
    err = _error(client.post("/jobs", json=body), status)
    assert err["message"].startswith(field), err
    assert _counts() == before


def test_eval_dataset_must_be_labeled_with_task_labels(client, dataset_id, tiny_models):
    other = client.post("/datasets", json={"name": "e", "records": [
        {"text": "x", "label": "fire"}]}).json()["id"]
    err = _error(client.post("/jobs", json=_job(dataset_id, tiny_models, data={
        "dataset_id": dataset_id, "eval_dataset_id": other})), 422)
    assert "fire" in err["message"]
    err = _error(client.post("/jobs", json=_job(dataset_id, tiny_models, data={
        "dataset_id": dataset_id, "eval_dataset_id": dataset_id})), 422)
    assert "no labels" in err["message"]


def test_job_is_queued_with_location_and_can_be_cancelled(client, dataset_id, tiny_models):
    r = client.post("/jobs", json=_job(dataset_id, tiny_models))
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] == "queued" and job["progress"] == 0 and job["error"] is None
    assert client.get("/jobs").json()["jobs"][0]["id"] == job["id"]
    assert client.get("/jobs?state=queued").json()["jobs"]
    assert client.get("/jobs?state=succeeded").json()["jobs"] == []
    cancelled = client.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert _error(client.post(f"/jobs/{job['id']}/cancel"), 409)["code"] == "job_final"
    assert _error(client.get("/jobs/job_nope"), 404)["code"] == "not_found"


@pytest.mark.parametrize("over, status, field", [
    ({"texts": []}, 422, "texts"),
    ({"texts": [1]}, 422, "texts[0]"),
    ({"texts": "flood"}, 422, "texts"),
    ({"texts": ["flood", None]}, 422, "texts[1]"),
    ({"texts": ["flood", ""]}, 422, "texts[1]"),
    ({"texts": ["   \n"]}, 422, "texts[0]"),
    ({"texts": ["x" * 20_001]}, 422, "texts[0]"),
    ({"texts": ["x"] * 257}, 413, "texts"),
    ({"threshold": 2}, 422, "threshold"),
    ({"threshold": -0.1}, 422, "threshold"),
    ({"threshold": "high"}, 422, "threshold"),
    ({"top_k": 0}, 422, "top_k"),
    ({"model": ""}, 422, "model"),
    ({"model": "ghost:x"}, 422, "model"),
    ({"surprise": 1}, 422, "surprise"),
])
def test_bad_classify_requests_name_the_field(client, over, status, field):
    body = {"model": "ghost", "texts": ["flood"], **over}
    err = _error(client.post("/classify", json=body), status)
    assert err["message"].startswith(field), err
    assert client.app.state.batcher.queued == 0 and not client.app.state.pool.stats()["versions"]


def test_classify_errors(client, dataset_id, tiny_models):
    assert _error(client.post("/classify", json={"model": "ghost", "texts": ["x"]}),
                  404)["code"] == "model_not_found"
    client.post("/jobs", json=_job(dataset_id, tiny_models))
    err = _error(client.post("/classify", json={"model": "crisis", "texts": ["x"]}), 409)
    assert err["code"] == "model_not_ready"


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/datasets", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel",
                 "/jobs/{job_id}/events", "/models", "/models/{name}",
                 "/models/{name}/versions/{version}", "/models/{name}/aliases/{alias}",
                 "/classify", "/evaluations", "/evaluations/{evaluation_id}", "/healthz", "/readyz",
                 "/metrics"]:
        assert path in paths, path
    assert "multipart/form-data" in paths["/datasets"]["post"]["requestBody"]["content"]


def test_unknown_route_is_a_json_404(client):
    assert _error(client.get("/nope"), 404)["code"] == "not_found"


def test_api_keys_and_scopes(client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_API_KEYS", "admin-key,reader:classify")
    get_settings.cache_clear()
    assert client.get("/healthz").status_code == 200
    assert _error(client.get("/models"), 401)["code"] == "unauthorized"
    assert _error(client.get("/models", headers={"Authorization": "Bearer wrong"}), 401)
    ok = client.get("/models", headers={"Authorization": "Bearer reader"})
    assert ok.status_code == 200
    assert _error(client.get("/jobs", headers={"Authorization": "Bearer reader"}), 403)
    assert client.get("/jobs", headers={"Authorization": "Bearer admin-key"}).status_code == 200

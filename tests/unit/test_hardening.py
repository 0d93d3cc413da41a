"""Hostile input and unsafe defaults: no pickle, JSON-only Celery, CORS off, no path escapes,
NUL characters refused, the error shape documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core.config import Settings
from worker.celery_app import celery_config

ROOT = Path(__file__).resolve().parents[2]
UNSAFE = re.compile(r"\bimport pickle\b|\bpickle\.|\bcloudpickle\b|\bdill\b|joblib\.load|"
                    r"allow_pickle\s*=\s*True|torch\.load\((?![^)]*weights_only\s*=\s*True)")


def test_no_pickle_anywhere_in_the_code():
    offenders = [f"{path.relative_to(ROOT)}:{n}"
                 for folder in ("app", "worker", "scripts", "migrations")
                 for path in (ROOT / folder).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if UNSAFE.search(line)]
    assert not offenders, offenders


def test_celery_holds_messages_until_done_and_speaks_only_json():
    conf = celery_config(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"]
    assert conf["broker_transport_options"]["visibility_timeout"] >= 6 * 3600


def test_cors_is_off_by_default_and_on_only_for_configured_origins(embedded, monkeypatch):
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app()) as client:
        resp = client.options("/classify", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    monkeypatch.setenv("TAILOR_CORS_ORIGINS", "https://ops.example")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        ok = client.options("/classify", headers={**preflight, "Origin": "https://ops.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        assert "access-control-allow-origin" not in client.options(
            "/classify", headers=preflight).headers


def test_artifact_paths_cannot_escape_the_store(tmp_path):
    from app.core.errors import Unavailable
    from app.serving.pool import ModelPool

    pool = ModelPool(tmp_path / "artifacts", tmp_path / "cache", 2, memory_budget=1 << 30)
    for path in ("../outside", "/etc", "jobs/../../x"):
        with pytest.raises(Unavailable) as err:
            pool.acquire("crisis:1", path, {})
        assert err.value.code == "artifact_path"


def test_a_message_with_a_path_for_a_job_id_is_refused(embedded):
    from worker.runner import job_workdir, run_job

    for hostile in ("../../etc", "job_../../x", "job_0123456789abcdef/.."):
        assert run_job(hostile) == "malformed job id"
    assert not job_workdir("job_0123456789abcdef").exists()


def test_nul_characters_and_repeated_parameters_are_refused_naming_the_field(client):
    resp = client.get("/jobs", params={"name": "a\x00b"})
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == "query.name: NUL characters are not allowed"
    twice = client.get("/jobs?limit=5&limit=6")
    assert twice.status_code == 422 and twice.json()["error"]["message"].startswith("query.limit")
    resp = client.post("/datasets", json={"name": "d", "records": [{"text": "a\x00b"}]})
    assert resp.status_code == 422 and resp.json()["error"]["message"].startswith(
        "records[0].text")
    assert client.get("/jobs").json()["jobs"] == []


def test_huge_numbers_are_refused_not_passed_to_the_database(client):
    assert client.get("/jobs", params={"offset": 10**20}).status_code == 422
    assert client.get("/models/x/versions/99999999999").status_code == 422
    resp = client.post("/classify", json={"model": "x:99999999999", "texts": ["a"]})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "version_not_found"


def test_openapi_documents_the_error_shape_and_bearer_auth(client):
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation
                continue
            assert operation["security"] == [{"bearer": []}]
            for status in ("401", "403", "422", "503"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)

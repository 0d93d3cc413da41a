"""/readyz says "artifacts" is ok only when the store holds what the registry references.

An API process whose artifact directory is not the workers' (a second host without the
shared mount, a wrong TAILOR_ARTIFACTS_DIR) used to answer ready while /classify failed with
503 artifact_missing for every model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import reset_caches, session_scope
from app.main import create_app
from app.models import ModelVersion
from app.models.base import utcnow
from app.ops import workers
from tests.fixtures.versions import register_tiny


def _a_worker_beats() -> None:
    now = utcnow()
    with session_scope() as db:
        workers.beat(db, worker_id="tailor-1@box/1", hostname="box", pid=1, queues=["distill"],
                     started_at=now, now=now)


def _version_dir(name: str, version: int) -> Path:
    with session_scope() as db:
        row = db.query(ModelVersion).filter_by(model_name=name, version=version).one()
        return get_settings().artifacts / row.artifact_path


def test_readiness_opens_the_files_of_aliased_and_newest_versions(client, tiny_models):
    versions = [register_tiny(tiny_models[1], seed=s) for s in range(1, 6)]
    assert versions == [1, 2, 3, 4, 5]
    resp = client.put("/models/crisis/aliases/production", json={"version": 1, "force": True})
    assert resp.status_code == 200, resp.text
    _a_worker_beats()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["checks"]["artifacts"] == "ok"

    # v2 is neither aliased nor among the 3 newest: not sampled (readiness stays cheap).
    shutil.rmtree(_version_dir("crisis", 2))
    assert client.get("/readyz").json()["checks"]["artifacts"] == "ok"

    # The version behind `production` lost a file: not ready, and said without model names
    # (/readyz needs no key).
    (_version_dir("crisis", 1) / "adapter.safetensors").unlink()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    verdict = ready.json()["checks"]["artifacts"]
    assert verdict.startswith("error: 1 of 4 sampled registered versions have files missing")
    assert "crisis" not in verdict and "TAILOR_ARTIFACTS_DIR" in verdict


def test_an_api_on_another_artifact_directory_is_not_ready(client, tiny_models, tmp_path,
                                                           monkeypatch):
    register_tiny(tiny_models[1])
    _a_worker_beats()
    assert client.get("/readyz").status_code == 200

    # A second API process on the same database and broker, but its own empty store.
    monkeypatch.setenv("TAILOR_ARTIFACTS_DIR", str(tmp_path / "elsewhere"))
    reset_caches()
    with TestClient(create_app()) as second:
        ready = second.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["artifacts"].startswith("error: 1 of 1 sampled")
        classify = second.post("/classify", json={"model": "crisis", "texts": ["flood"]})
        assert classify.status_code == 503
        assert classify.json()["error"]["code"] == "artifact_missing"

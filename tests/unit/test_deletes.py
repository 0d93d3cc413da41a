"""Cleaning up (embedded, SQLite, in-process app): DELETE /datasets/{id}, /jobs/{id} and
/models/{name}/versions/{v}: what each refuses, what it removes, what it keeps, who may."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import DatasetRecord, Job, JobEvent, JobState, ModelAlias
from app.models.base import utcnow
from tests.fixtures.tiny import corpus
from tests.fixtures.versions import register_tiny
from tests.support import job_body
from tests.unit.test_ownership import bearer, restart_app

ALICE, BOB, ADMIN, READER = "del-alice", "del-bob", "del-admin", "del-reader"
KEYS = f"{ALICE}:train,{BOB}:train,{ADMIN}:admin,{READER}:classify"


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    return error


def _upload(client, name: str = "corpus", headers=None) -> str:
    resp = client.post("/datasets", json={"name": name,
                                          "records": [{"text": t} for t in corpus(12)]},
                       headers=headers or {})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _count(table, **where) -> int:
    with session_scope() as db:
        stmt = select(func.count()).select_from(table)
        for column, value in where.items():
            stmt = stmt.where(getattr(table, column) == value)
        return int(db.scalar(stmt))


@pytest.fixture
def keyed(client, monkeypatch):
    with restart_app(monkeypatch, KEYS) as app:  # lifespan: the serving pool, the ref cache
        yield app


def test_a_dataset_in_use_is_refused_naming_the_job_then_deleted_once_final(client,
                                                                           tiny_models):
    ds = _upload(client)
    ev = client.post("/datasets", json={"name": "eval", "records": [
        {"text": "flood water rose", "label": "crisis"}]}).json()["id"]
    job = client.post("/jobs", json=job_body("crisis", ds, *tiny_models,
                                             eval_dataset_id=ev)).json()
    for used in (ds, ev):  # as corpus and as eval set
        err = _error(client.delete(f"/datasets/{used}"), 409, "dataset_in_use")
        assert err["details"] == {"jobs": [job["id"]]} and job["id"] in err["message"]
    assert client.get(f"/datasets/{ds}").status_code == 200
    assert client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"

    resp = client.delete(f"/datasets/{ds}")
    assert resp.status_code == 204 and resp.content == b""
    assert _count(DatasetRecord, dataset_id=ds) == 0
    _error(client.get(f"/datasets/{ds}"), 404, "not_found")
    _error(client.delete(f"/datasets/{ds}"), 404, "not_found")
    assert ds not in [d["id"] for d in client.get("/datasets").json()["datasets"]]
    # The final job stays a record: its spec still names the id it ran on ...
    kept = client.get(f"/jobs/{job['id']}").json()
    assert kept["state"] == "cancelled" and kept["spec"]["data"]["dataset_id"] == ds
    # ... and submitting that spec again is refused naming the field, creating nothing.
    before = _count(Job)
    err = _error(client.post("/jobs", json=job_body("crisis", ds, *tiny_models)), 422,
                 "dataset_not_found")
    assert err["details"] == {"field": "data.dataset_id"}
    assert _count(Job) == before


def test_deleting_a_job_needs_a_final_state_and_keeps_its_registered_version(client,
                                                                            tiny_models):
    ds = _upload(client)
    queued = client.post("/jobs", json=job_body("crisis", ds, *tiny_models)).json()
    err = _error(client.delete(f"/jobs/{queued['id']}"), 409, "job_not_final")
    assert err["details"] == {"state": "queued"}

    # A succeeded job whose student became crisis:1, with checkpoints beside it.
    assert register_tiny(tiny_models[1]) == 1
    version = client.get("/models/crisis/versions/1").json()
    job_id = version["job_id"]
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state=JobState.SUCCEEDED, progress=1.0,
                   spec={"name": "crisis", "data": {"dataset_id": ds}}, metrics={},
                   attempts=1, max_attempts=3, owner="local", model_name="crisis",
                   model_version=1, finished_at=utcnow()))
        db.add(JobEvent(job_id=job_id, kind="state", state="succeeded", progress=1.0))
    workdir = get_settings().artifacts / "jobs" / job_id
    (workdir / "annotation.safetensors").write_bytes(b"checkpoint")
    (workdir / "phase-1-easy").mkdir()
    (workdir / "phase-1-easy" / "state.safetensors").write_bytes(b"checkpoint")
    assert client.delete(f"/jobs/{job_id}").status_code == 204
    _error(client.get(f"/jobs/{job_id}"), 404, "not_found")
    assert _count(JobEvent, job_id=job_id) == 0
    assert sorted(p.name for p in workdir.iterdir()) == ["student"]
    assert sorted(p.name for p in (workdir / "student").iterdir()) == sorted(version["files"])
    # The version keeps serving and keeps its lineage.
    out = client.post("/classify", json={"model": "crisis:1", "texts": ["flood water rose"]})
    assert out.status_code == 200 and out.json()["version"] == 1
    assert client.get("/models/crisis/versions/1").json()["job_id"] == job_id

    # A cancelled job that never ran has no files; deleting it leaves nothing behind.
    client.post(f"/jobs/{queued['id']}/cancel")
    assert client.delete(f"/jobs/{queued['id']}").status_code == 204
    assert not (get_settings().artifacts / "jobs" / queued["id"]).exists()
    # With its job gone, the dataset it used can go too.
    assert client.delete(f"/datasets/{ds}").status_code == 204


def test_a_deleted_version_number_is_never_reused_and_classifies_as_unknown(client,
                                                                           tiny_models):
    assert [register_tiny(tiny_models[1], seed=s) for s in (1, 2, 3)] == [1, 2, 3]
    artifacts = get_settings().artifacts
    folder = artifacts / client.get("/models/crisis/versions/3").json()["lineage"]["job_id"]
    err = _error(client.delete("/models/crisis/versions/3"), 409, "version_not_archived")
    assert "crisis:3" in err["message"]
    assert client.post("/models/crisis/versions/3/archive").status_code == 200
    # Archiving refuses aliased versions; a row older than that rule is refused here too.
    with session_scope() as db:
        db.add(ModelAlias(model_name="crisis", alias="legacy", version=3))
    err = _error(client.delete("/models/crisis/versions/3"), 409, "version_aliased")
    assert err["details"] == {"aliases": ["legacy"]} and "legacy" in err["message"]
    with session_scope() as db:
        db.delete(db.get(ModelAlias, ("crisis", "legacy")))

    student = artifacts / "jobs" / folder.name / "student"
    assert student.is_dir()
    assert client.delete("/models/crisis/versions/3").status_code == 204
    assert not student.exists() and not student.parent.exists()
    # Every way of naming it answers exactly like a version that never existed.
    unknown = client.post("/classify", json={"model": "crisis:99", "texts": ["flood"]})
    gone = client.post("/classify", json={"model": "crisis:3", "texts": ["flood"]})
    assert gone.status_code == unknown.status_code == 404
    assert gone.json() == {"error": {**unknown.json()["error"], "message": unknown.json()[
        "error"]["message"].replace("99", "3")}}
    _error(client.get("/models/crisis/versions/3"), 404, "version_not_found")
    _error(client.delete("/models/crisis/versions/3"), 404, "version_not_found")
    _error(client.delete("/models/nope/versions/1"), 404, "model_not_found")
    listed = client.get("/models/crisis?include_archived=true").json()["versions"]
    assert [v["version"] for v in listed] == [1, 2]
    # The counter keeps the number: the next registration is 4, not 3.
    assert register_tiny(tiny_models[1], seed=4) == 4
    assert client.post("/classify", json={"model": "crisis", "texts": ["flood"]}
                       ).json()["version"] == 4

    # With every version deleted the name keeps its counter (and its holder).
    for v in (1, 2, 4):
        client.post(f"/models/crisis/versions/{v}/archive")
        assert client.delete(f"/models/crisis/versions/{v}").status_code == 204
    _error(client.post("/classify", json={"model": "crisis", "texts": ["flood"]}), 404,
           "model_not_found")
    assert register_tiny(tiny_models[1], seed=5) == 5


def test_scopes_and_ownership_of_deletes(keyed, tiny_models):
    alice, bob = bearer(ALICE), bearer(BOB)
    ds = _upload(keyed, headers=alice)
    job = keyed.post("/jobs", json=job_body("crisis", ds, *tiny_models), headers=alice).json()
    # Another train key gets exactly what an absent id gets.
    for path, absent in ((f"/datasets/{ds}", "/datasets/ds_0000000000000000"),
                         (f"/jobs/{job['id']}", "/jobs/job_0000000000000000")):
        theirs, missing = keyed.delete(path, headers=bob), keyed.delete(absent, headers=bob)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
        _error(keyed.delete(path, headers=bearer(READER)), 403, "forbidden")
    # The 409 names the job to its owner (it would be a 404 for anyone else).
    assert _error(keyed.delete(f"/datasets/{ds}", headers=alice), 409,
                  "dataset_in_use")["details"] == {"jobs": [job["id"]]}
    keyed.post(f"/jobs/{job['id']}/cancel", headers=alice)
    assert keyed.delete(f"/jobs/{job['id']}", headers=bearer(ADMIN)).status_code == 204
    assert keyed.delete(f"/datasets/{ds}", headers=alice).status_code == 204

    # Versions: deleting is a registry change like archiving, so it needs admin.
    register_tiny(tiny_models[1])
    keyed.post("/models/crisis/versions/1/archive", headers=bearer(ADMIN))
    for key in (ALICE, READER):
        _error(keyed.delete("/models/crisis/versions/1", headers=bearer(key)), 403,
               "forbidden")
    _error(keyed.delete("/models/crisis/versions/1"), 401, "unauthorized")
    assert keyed.delete("/models/crisis/versions/1", headers=bearer(ADMIN)).status_code == 204


def test_a_model_name_stays_with_its_holder_when_its_first_job_and_version_go(embedded):
    from app.core.errors import Conflict
    from app.jobs.service import delete_job
    from app.registry.service import delete_version, name_holder, refuse_taken_name, set_archived
    from tests.unit.test_model_names import A, B, _job, _register

    job_id, submitted = _job(A.key_id, "floods")
    assert _register(embedded / "artifacts", job_id, "floods", submitted) == 1
    with session_scope() as db:
        db.get(Job, job_id).state = JobState.SUCCEEDED
    with session_scope() as db:
        delete_job(db=db, job_id=job_id, viewer=A)
        set_archived(db=db, name="floods", version=1, archived=True)
        delete_version(db=db, name="floods", version=1)
    with session_scope() as db:
        assert name_holder(db, "floods")[0] == A.key_id
        refuse_taken_name(db, "floods", A)
        with pytest.raises(Conflict):
            refuse_taken_name(db, "floods", B)


def test_migration_0009_records_the_holder_the_old_rule_named(tmp_path, monkeypatch):
    from sqlalchemy import text

    from app.core.migrate import upgrade
    from app.registry.service import name_holder
    from tests.support import embedded_home

    with embedded_home(tmp_path, monkeypatch, revision="0005"):
        with session_scope() as db:
            for model in ("owned", "orphan", "empty"):
                db.execute(text("INSERT INTO registered_models (name, latest_version, "
                                "created_at, updated_at) VALUES (:n, 2, :t, :t)"),
                           {"n": model, "t": utcnow()})
            db.execute(text("INSERT INTO jobs (id, name, state, progress, spec, metrics, "
                            "attempts, max_attempts, cancel_requested, created_at, updated_at, "
                            "owner) VALUES ('job_a', 'owned', 'succeeded', 1, '{}', '{}', 1, 3, "
                            "0, :t, :t, 'key_a')"), {"t": utcnow()})
            for model, version, job in (("owned", 2, "job_b"), ("owned", 1, "job_a"),
                                        ("orphan", 1, "job_gone")):
                db.execute(text(
                    "INSERT INTO model_versions (model_name, version, job_id, artifact_path, "
                    "files, base_model, labels, multi_label, metrics, lineage, card, archived, "
                    "created_at, warnings) VALUES (:m, :v, :j, 'x', '{}', 'b', '[]', 0, '{}', "
                    "'{}', '', 0, :t, '[]')"), {"m": model, "v": version, "j": job,
                                                "t": utcnow()})
        upgrade(get_settings().db_url, "head")
        with session_scope() as db:
            assert name_holder(db, "owned")[0] == "key_a"  # the first version's job
            assert name_holder(db, "orphan")[0] == "admin"  # its job row is gone
            assert name_holder(db, "empty") is None

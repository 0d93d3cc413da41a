"""A model name belongs to the key that registered its first version (embedded, SQLite).

Models are shared for reading and serving, and `/classify {"model": "crisis"}` serves the
latest version: another `train` key registering under the same name would replace what
everyone calling that name gets. Submission refuses it; registration refuses the race where
two keys' jobs were both admitted while the name was free.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.core.db import session_scope
from app.core.errors import Conflict
from app.core.security import Principal
from app.models import Job, JobState
from app.models.base import new_id, utcnow
from app.registry.service import name_holder, refuse_taken_name, register_version

A, B = Principal("key_a", frozenset({"train"})), Principal("key_b", frozenset({"train"}))
ADMIN = Principal("env:0123456789ab", frozenset({"admin"}))


def _job(owner: str, name: str, created_at=None) -> tuple[str, tuple[str, object]]:
    with session_scope() as db:
        job = Job(id=new_id("job"), name=name, state=JobState.REGISTERING, progress=0.9,
                  spec={"name": name}, metrics={}, attempts=1, max_attempts=3, owner=owner,
                  created_at=created_at or utcnow())
        db.add(job)
        db.commit()
        return job.id, (job.owner, job.created_at)


def _register(artifacts: Path, job_id: str, name: str, submitted=None) -> int:
    student = artifacts / "jobs" / job_id / "student"
    student.mkdir(parents=True)
    result = SimpleNamespace(
        student_dir=student, files={}, base_model="/models/student", metrics={}, warnings=[],
        lineage={"config": {"task": {"labels": [{"name": "crisis"}, {"name": "calm"}],
                                     "multi_label": False}}})
    with session_scope() as db:
        version = register_version(db=db, job_id=job_id, name=name, result=result,
                                   artifacts_root=artifacts, submitted=submitted)
        db.commit()
        return version


def test_only_the_first_registrant_or_an_admin_is_admitted(embedded):
    artifacts = embedded / "artifacts"
    first, submitted = _job(A.key_id, "crisis")
    with session_scope() as db:
        for who in (A, B, ADMIN):  # a name without a version is anyone's
            refuse_taken_name(db, "crisis", who)
    assert _register(artifacts, first, "crisis", submitted) == 1
    with session_scope() as db:
        assert name_holder(db, "crisis")[0] == A.key_id
        refuse_taken_name(db, "crisis", A)
        refuse_taken_name(db, "crisis", ADMIN)
        refuse_taken_name(db, "other", B)
        with pytest.raises(Conflict) as err:
            refuse_taken_name(db, "crisis", B)
        assert err.value.code == "model_name_taken"
        assert err.value.details == {"field": "name"}
        assert A.key_id not in err.value.message


def test_a_race_for_a_free_name_is_won_by_the_first_registration(embedded):
    artifacts = embedded / "artifacts"
    earlier = utcnow() - timedelta(minutes=5)
    a_job, a_sub = _job(A.key_id, "floods", created_at=earlier)
    b_job, b_sub = _job(B.key_id, "floods", created_at=earlier + timedelta(seconds=1))
    assert _register(artifacts, a_job, "floods", a_sub) == 1
    with pytest.raises(Conflict) as err:  # B was admitted while the name was free
        _register(artifacts, b_job, "floods", b_sub)
    assert err.value.code == "model_name_taken"
    # A's own next job, and a job an admin submitted after A took the name, register.
    a_next, a_next_sub = _job(A.key_id, "floods")
    assert _register(artifacts, a_next, "floods", a_next_sub) == 2
    admin_job, admin_sub = _job(ADMIN.key_id, "floods")
    assert _register(artifacts, admin_job, "floods", admin_sub) == 3
    with session_scope() as db:
        assert name_holder(db, "floods")[0] == A.key_id  # the first version decides


def test_a_first_version_without_its_job_is_admins(embedded):
    artifacts = embedded / "artifacts"
    orphan = new_id("job")  # registered by a library caller: no job row
    assert _register(artifacts, orphan, "legacy") == 1
    with session_scope() as db:
        assert name_holder(db, "legacy")[0] == "admin"
        refuse_taken_name(db, "legacy", ADMIN)
        with pytest.raises(Conflict):
            refuse_taken_name(db, "legacy", A)

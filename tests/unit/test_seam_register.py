"""The worker's last step through the seam (embedded, SQLite): registering a finished run.

The runner records `registering` as a progress step, and a progress step that meets a
database outage is skipped (the run keeps computing). A job whose run finished while its
`registering` step went unrecorded is still registered once the database answers: it is
not failed as an illegal `evaluating -> succeeded` after all its work was done.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.jobs import seam
from app.models import Job, JobEvent, JobState
from app.models.base import new_id, utcnow
from app.models.owned import LOCAL_OWNER
from worker.distill.stages import Stage

OWNER = "box:1:abcdef"


def _claimed_job() -> seam.Claim:
    job_id = new_id("job")
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state=JobState.QUEUED, progress=0.0,
                   spec={"name": "crisis"}, metrics={}, attempts=0, max_attempts=3,
                   woken_at=utcnow(), owner=LOCAL_OWNER))
    with session_scope() as db:
        return seam.claim(db, job_id, OWNER, lease_seconds=60)


def _result(artifacts: Path, job_id: str) -> Any:
    student = artifacts / "jobs" / job_id / "student"
    student.mkdir(parents=True)
    return SimpleNamespace(
        student_dir=student, files={}, base_model="/models/student", metrics={"f1": 0.5},
        warnings=[], lineage={"config": {"task": {"labels": [{"name": "crisis"},
                                                             {"name": "calm"}],
                                                  "multi_label": False}}})


def _state_events(job_id: str) -> list[str]:
    with session_scope() as db:
        return list(db.scalars(select(JobEvent.state).where(
            JobEvent.job_id == job_id, JobEvent.kind == "state").order_by(JobEvent.id)))


@pytest.mark.parametrize("recorded", [True, False], ids=["step recorded", "step lost"])
def test_a_finished_run_registers_whether_or_not_its_registering_step_was_recorded(
        embedded, recorded):
    claimed = _claimed_job()
    for stage in (Stage.ANNOTATING, Stage.DISTILLING, Stage.EVALUATING):
        with session_scope() as db:
            seam.advance(db, claimed.job_id, OWNER, stage=stage, phase=str(stage),
                         progress=0.5, restart=stage is Stage.ANNOTATING)
    if recorded:
        with session_scope() as db:
            seam.advance(db, claimed.job_id, OWNER, stage=JobState.REGISTERING,
                         phase="register", progress=0.98)
    with session_scope() as db:
        version = seam.register(db, claimed, _result(embedded / "artifacts", claimed.job_id),
                                artifacts_root=embedded / "artifacts")
    assert version == 1
    with session_scope() as db:
        job = db.get(Job, claimed.job_id)
        assert job is not None
        assert (job.state, job.model_version, job.error_code) == ("succeeded", 1, None)
    assert _state_events(claimed.job_id) == ["annotating", "distilling", "evaluating",
                                             "registering", "succeeded"]


def test_register_still_refuses_a_job_that_never_ran(embedded):
    claimed = _claimed_job()  # queued: its run recorded no step at all
    with pytest.raises(seam.IllegalTransition), session_scope() as db:
        seam.register(db, claimed, _result(embedded / "artifacts", claimed.job_id),
                      artifacts_root=embedded / "artifacts")
    with session_scope() as db:
        job = db.get(Job, claimed.job_id)
        assert job is not None and job.state == "queued" and job.model_version is None

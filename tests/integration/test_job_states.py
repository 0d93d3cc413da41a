"""The job state machine, enforced by the worker's seam (app.jobs.seam) and the lifecycle on
SQLite (embedded) and on real PostgreSQL: an illegal step raises and leaves the row as it was.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.core.db import lock_row, session_scope
from app.jobs import lifecycle, seam
from app.models import Job, JobEvent, JobState
from app.models.base import new_id, utcnow
from app.models.job import can_transition
from app.models.owned import LOCAL_OWNER
from worker.distill.stages import Stage

pytestmark = pytest.mark.integration
OWNER = "box:1:abcdef"


def _queued() -> str:
    job_id = new_id("job")
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state=JobState.QUEUED, progress=0.0,
                   spec={"name": "crisis"}, metrics={}, attempts=0, max_attempts=3,
                   woken_at=utcnow(), owner=LOCAL_OWNER))
    return job_id


def _claim(job_id: str) -> seam.Claim:
    with session_scope() as db:
        return seam.claim(db, job_id, OWNER, lease_seconds=60)


def _step(job_id: str, stage: Stage | JobState, *, restart: bool = False) -> None:
    with session_scope() as db:
        seam.advance(db, job_id, OWNER, stage=stage, phase=str(stage), progress=0.5,
                     restart=restart)


def _row(job_id: str) -> tuple[str, list[str]]:
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job is not None
        states = db.scalars(select(JobEvent.state).where(
            JobEvent.job_id == job_id, JobEvent.kind == "state").order_by(JobEvent.id)).all()
        return job.state, list(states)


def test_a_queued_job_cannot_succeed_without_registering(database):
    job_id = _queued()
    _claim(job_id)
    with pytest.raises(seam.IllegalTransition) as refused, session_scope() as db:
        seam.finish(db, job_id, OWNER, state=JobState.SUCCEEDED)
    assert refused.value.code == "illegal_transition"
    assert refused.value.details == {"from": "queued", "to": "succeeded"}
    assert _row(job_id) == ("queued", [])  # rolled back: no state, no event
    for stage in (Stage.ANNOTATING, Stage.DISTILLING, Stage.EVALUATING, JobState.REGISTERING):
        _step(job_id, stage, restart=stage == Stage.ANNOTATING)
    with session_scope() as db:
        assert seam.finish(db, job_id, OWNER, state=JobState.SUCCEEDED)
    assert _row(job_id) == ("succeeded", ["annotating", "distilling", "evaluating",
                                          "registering", "succeeded"])


def test_nothing_follows_a_final_state(database):
    job_id = _queued()
    _claim(job_id)
    for stage in (Stage.ANNOTATING, JobState.REGISTERING):
        _step(job_id, stage, restart=stage == Stage.ANNOTATING)
    with session_scope() as db:
        assert seam.finish(db, job_id, OWNER, state=JobState.SUCCEEDED)
    for target in (JobState.ANNOTATING, JobState.FAILED, JobState.CANCELLED):
        # The sweeper and POST /cancel finish jobs through set_final: it refuses too.
        with pytest.raises(seam.IllegalTransition), session_scope() as db:
            job = lock_row(db, Job, job_id)
            assert job is not None
            if target == JobState.ANNOTATING:
                lifecycle.move(job, target, restart=True)
            else:
                lifecycle.set_final(db, job, state=target, error=("x", "y"))
    assert _row(job_id)[0] == "succeeded"
    # A claim of a finished job is refused before any write.
    with pytest.raises(seam.NotClaimed) as not_claimed, session_scope() as db:
        seam.claim(db, job_id, OWNER, lease_seconds=60)
    assert not_claimed.value.reason == "already succeeded"


def test_a_job_moves_forward_and_restarts_only_at_an_attempts_first_step(database):
    job_id = _queued()
    _claim(job_id)
    _step(job_id, Stage.ANNOTATING, restart=True)
    _step(job_id, Stage.DISTILLING)
    with pytest.raises(seam.IllegalTransition):
        _step(job_id, Stage.ANNOTATING)  # backwards within an attempt
    with pytest.raises(seam.IllegalTransition):
        _step(job_id, JobState.QUEUED, restart=True)  # a restart goes to annotating only
    assert _row(job_id)[0] == "distilling"
    _step(job_id, Stage.ANNOTATING, restart=True)  # a new attempt's first step
    assert _row(job_id) == ("annotating", ["annotating", "distilling", "annotating"])


def test_every_engine_stage_maps_to_a_running_job_state():
    assert set(seam.STAGE_STATES) == set(Stage)
    running = {JobState.ANNOTATING, JobState.DISTILLING, JobState.EVALUATING}
    assert set(seam.STAGE_STATES.values()) == running
    assert [seam.job_state(s) for s in Stage] == [JobState.ANNOTATING, JobState.DISTILLING,
                                                   JobState.EVALUATING]
    assert not can_transition("succeeded", "annotating", restart=True)
    assert not can_transition("queued", "succeeded")
    assert not can_transition("evaluating", "succeeded")
    assert can_transition("registering", "succeeded")
    assert can_transition("queued", "cancelled") and not can_transition("failed", "cancelled")

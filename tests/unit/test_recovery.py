"""The sweeper's decisions and the claim guard, on a migrated SQLite database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core.db import session_scope
from app.jobs import lifecycle, recovery
from app.models import Job, JobEvent
from app.models.base import new_id, utcnow

REQUEUE_S = 60


def _job(**fields) -> str:
    job_id = new_id("job")
    defaults = {"name": "crisis", "state": "queued", "progress": 0.0, "spec": {}, "metrics": {},
                "attempts": 0, "max_attempts": 3, "woken_at": utcnow()}
    with session_scope() as db:
        db.add(Job(id=job_id, **{**defaults, **fields}))
    return job_id


def _sweep(waiting: set[str] | None = None) -> recovery.SweepResult:
    with session_scope() as db:
        return recovery.sweep(db, requeue_after_s=REQUEUE_S, waiting=waiting)


def _row(job_id: str) -> Job:
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def _events(job_id: str, kind: str) -> list[JobEvent]:
    with session_scope() as db:
        return list(db.query(JobEvent).filter_by(job_id=job_id, kind=kind))


@pytest.fixture(autouse=True)
def _db(embedded):
    yield


def test_an_expired_lease_is_cleared_and_the_job_rewoken():
    past = utcnow() - timedelta(seconds=5)
    dead = _job(state="distilling", attempts=1, lease_owner="w1", lease_expires_at=past)
    live = _job(state="distilling", attempts=1, lease_owner="w2",
                lease_expires_at=utcnow() + timedelta(seconds=60))
    result = _sweep()
    assert result.requeue == [dead]
    job = _row(dead)
    assert job.lease_owner is None and job.state == "distilling" and job.attempts == 1
    event = _events(dead, "requeued")[0]
    assert event.data["reason"] == "lease_expired" and event.data["previous_owner"] == "w1"
    assert _row(live).lease_owner == "w2"
    assert _sweep().requeue == []  # settled: the next sweep leaves it to the woken worker


def test_a_job_out_of_attempts_fails_with_the_reason():
    past = utcnow() - timedelta(seconds=5)
    job_id = _job(state="annotating", phase="annotate", attempts=3, lease_owner="w9",
                  lease_expires_at=past)
    assert _sweep().failed == [job_id]
    job = _row(job_id)
    assert job.state == "failed" and job.error_code == "worker_lost"
    assert "3 of 3 attempts" in job.error_message and "w9" in job.error_message
    assert "annotating" in job.error_message and job.finished_at is not None


def test_a_cancel_whose_worker_died_is_finished():
    past = utcnow() - timedelta(seconds=5)
    job_id = _job(state="evaluating", attempts=1, lease_owner="w1", lease_expires_at=past,
                  cancel_requested=True)
    assert _sweep().cancelled == [job_id]
    assert _row(job_id).state == "cancelled"


def test_unclaimed_jobs_are_rewoken_only_when_old_and_not_waiting_in_the_broker():
    old = utcnow() - timedelta(seconds=REQUEUE_S + 5)
    lost = _job(woken_at=old)
    queued = _job(woken_at=old)
    fresh = _job()
    done = _job(state="succeeded", woken_at=old)
    assert _sweep(waiting={queued}).requeue == [lost]
    assert _row(lost).woken_at > old
    assert _events(lost, "requeued")[0].data["reason"] == "no_message"
    assert _row(fresh).woken_at is not None and _row(done).state == "succeeded"
    # When the broker cannot be read, age alone decides (a duplicate wake-up is harmless).
    assert _sweep(waiting=None).requeue == [queued]


def test_claim_takes_a_free_lease_once_and_respects_max_attempts():
    job_id = _job(attempts=2)
    with session_scope() as db:
        first = lifecycle.claim(db, job_id, "w1", 60)
        assert first is not None and first.attempts == 3
        assert lifecycle.claim(db, job_id, "w2", 60) is None  # live lease
    with session_scope() as db:
        job = db.get(Job, job_id)
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope() as db:
        assert lifecycle.claim(db, job_id, "w2", 60) is None  # attempts spent
    assert [e.data["owner"] for e in _events(job_id, "claimed")] == ["w1"]


def test_hold_refuses_a_job_we_do_not_own():
    job_id = _job(lease_owner="w1", lease_expires_at=utcnow() + timedelta(seconds=60))
    with session_scope() as db, pytest.raises(lifecycle.LeaseLost):
        lifecycle.hold(db, job_id, "w2")

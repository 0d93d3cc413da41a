"""Job state changes, shared by the API (submit, cancel), the sweeper and the worker (through
app.jobs.seam: claim, progress, finish).

Every change is guarded by the current state (and, for the worker, by its lease), passes
the job state machine (`move`: app.models.job.can_transition), and adds one row to
job_events. Functions only flush: whoever opened the session commits it. Plain SQLAlchemy;
no FastAPI, no Celery.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.core.db import lock_row
from app.core.errors import Conflict
from app.models import FINAL_STATES, Job, JobEvent, JobState
from app.models.base import utcnow
from app.models.job import WORKER_NAME_MAX, can_transition
from app.webhooks import outbox

NON_FINAL = [s.value for s in JobState if s not in FINAL_STATES]


class IllegalTransition(Conflict):
    """A state change the job state machine forbids (409 `illegal_transition`): a bug in
    whoever asked, never something a client's request can cause."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id} cannot go from {current} to {target}",
                         code="illegal_transition", details={"from": current, "to": target})


def move(job: Job, target: str, *, restart: bool = False) -> bool:
    """Set `job.state` to `target`; return whether it changed.

    Raises:
        IllegalTransition: when `can_transition(job.state, target, restart=restart)` refuses;
            the row is left as it was.
    """
    if not can_transition(job.state, target, restart=restart):
        raise IllegalTransition(job.id, job.state, target)
    changed = job.state != target
    job.state = target
    return changed


def record_event(db: Session, job: Job, kind: str, data: dict[str, Any] | None = None) -> None:
    db.add(JobEvent(job_id=job.id, kind=kind, state=job.state, phase=job.phase,
                    progress=job.progress, data=data))


def claim(db: Session, job_id: str, owner: str, lease_seconds: int,
          worker: str | None = None) -> Job | None:
    """Take the job's lease if nobody holds a live one and attempts remain; count the attempt.

    `owner` is the lease holder's unique id; `worker` its Celery node name, shown on the job
    (default: `owner`). None if another worker holds it, it is final or cancelled, or its
    attempts are spent.
    """
    now = utcnow()
    result = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(NON_FINAL), Job.cancel_requested.is_(False),
               Job.attempts < Job.max_attempts,
               or_(Job.lease_owner.is_(None), Job.lease_expires_at < now))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                worker=(worker or owner)[:WORKER_NAME_MAX], attempts=Job.attempts + 1,
                started_at=now, updated_at=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = db.get(Job, job_id, populate_existing=True)
    assert job is not None
    record_event(db, job, "claimed", {"owner": owner, "worker": job.worker,
                                      "attempt": job.attempts})
    db.flush()
    return job


def hold(db: Session, job_id: str, owner: str) -> Job:
    """Lock the job row for the rest of the transaction; raise LeaseLost unless we own it."""
    job = lock_row(db, Job, job_id)
    if job is None or job.lease_owner != owner or job.is_final:
        raise LeaseLost(job_id)
    return job


def renew(db: Session, job_id: str, owner: str, lease_seconds: int) -> bool:
    """Extend our lease; False means we lost it (another worker took the job over)."""
    now = utcnow()
    result = db.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                          Job.state.in_(NON_FINAL))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))
    return result.rowcount == 1  # type: ignore[attr-defined]


def advance(db: Session, job_id: str, owner: str, *, state: str, phase: str | None,
            progress: float, metrics: dict[str, Any] | None = None,
            progress_detail: dict[str, Any] | None = None,
            event_data: dict[str, Any] | None = None, restart: bool = False) -> Job:
    """Record progress (and a state change) for a job we hold; return the fresh row.

    `progress_detail` replaces the stored one (`{"stage", "done", "total", "unit",
    "rate_per_s", "eta_s", "updated_at"}`, or None outside a counted stage); `restart`
    marks an attempt's first step (see `can_transition`).

    Raises:
        LeaseLost: we no longer hold the job.
        IllegalTransition: the state machine refuses `state` after the job's current one.
    """
    job = hold(db, job_id, owner)
    changed = move(job, state, restart=restart)
    job.phase, job.progress = phase, progress
    job.progress_detail = progress_detail
    if metrics is not None:
        job.metrics = {**(job.metrics or {}), **metrics}
    record_event(db, job, "state" if changed else "progress", event_data)
    db.flush()
    return job


def finish(db: Session, job_id: str, owner: str | None, *, state: str,
           error: tuple[str, str] | None = None, metrics: dict[str, Any] | None = None,
           model: tuple[str, int] | None = None,
           warnings: list[dict[str, str]] | None = None) -> bool:
    """Move a job to a final state (guarded by our lease when `owner` is given); False
    when it is already final or another worker holds it (nothing is written).

    Raises:
        IllegalTransition: the state machine refuses `state` (e.g. succeeded before
            registering).
    """
    job = lock_row(db, Job, job_id)
    if job is None or job.is_final or (owner is not None and job.lease_owner != owner):
        return False
    set_final(db, job, state=state, error=error, metrics=metrics, model=model)
    if warnings is not None:  # `[{"code", "message"}]` the engine raised about its results
        job.warnings = list(warnings)
    db.flush()
    return True


def set_final(db: Session, job: Job, *, state: str, error: tuple[str, str] | None = None,
              metrics: dict[str, Any] | None = None,
              model: tuple[str, int] | None = None) -> None:
    """Write a final state onto a locked job row and log it; the caller commits (and the
    job's webhooks, if it has a `notify.url`, are queued when it does).

    Raises:
        IllegalTransition: the state machine refuses `state` (the row is left as it was).
    """
    move(job, state)
    job.finished_at = utcnow()
    job.progress_detail = None  # counts describe a running stage; a final job has none
    job.lease_owner, job.lease_expires_at = None, None
    if state == JobState.SUCCEEDED:
        job.progress = 1.0
    if error:
        job.error_code, job.error_message = error
    if metrics is not None:
        job.metrics = {**(job.metrics or {}), **metrics}
    if model:
        job.model_name, job.model_version = model
    record_event(db, job, "state", {"error": {"code": error[0], "message": error[1]}}
                 if error else None)
    if model:  # registered in this same transaction (worker.runner)
        outbox.schedule(db, job, "version.registered")
    outbox.schedule(db, job, f"job.{state}")


def is_cancel_requested(db: Session, job_id: str) -> bool:
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


class LeaseLost(Exception):
    """The worker no longer holds the job (it expired and another took it, or it ended)."""

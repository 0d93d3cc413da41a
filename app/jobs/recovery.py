"""Finding jobs that nobody will run any more, and deciding their fate (the worker sweeper).

A job is stranded when its worker died (its lease expired) or its wake-up message was lost
(broker restarted, message taken by a worker that was killed before claiming it). Each is
re-woken, or, when it has used up its attempts or was asked to stop, finished with the reason.
Plain SQLAlchemy, so it is testable without Celery; the caller publishes the wake-ups.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import write_lock
from app.jobs import lifecycle
from app.models import Job, JobState
from app.models.base import utcnow

SWEEP_BATCH = 200  # rows looked at per sweep; the rest wait for the next one


@dataclass
class SweepResult:
    requeue: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def sweep(db: Session, *, requeue_after_s: float, waiting: Collection[str] | None,
          now: datetime | None = None) -> SweepResult:
    """Settle stranded jobs and return the ids to wake (publish them once the caller
    commits).

    `waiting` holds the job ids that have a message waiting in the broker (None: unknown);
    an unclaimed job with such a message is not stranded, whatever its age.
    """
    now = now or utcnow()
    out = SweepResult()
    expired = select(Job).where(
        Job.state.in_(lifecycle.NON_FINAL), Job.lease_owner.is_not(None),
        Job.lease_expires_at < now)
    for job in _locked(db, expired):
        _settle(db, job, now, out, reason="lease_expired",
                detail=f"the worker {job.worker or job.lease_owner} stopped renewing its lease "
                       f"in state {job.state} (phase {job.phase})")
    cutoff = now - timedelta(seconds=requeue_after_s)
    unclaimed = select(Job).where(
        Job.state.in_(lifecycle.NON_FINAL), Job.lease_owner.is_(None),
        func.coalesce(Job.woken_at, Job.created_at) < cutoff)
    for job in _locked(db, unclaimed):
        if waiting is not None and job.id in waiting:
            continue
        _settle(db, job, now, out, reason="no_message",
                detail=f"no worker took it for {requeue_after_s:.0f}s and no message for it "
                       "was waiting in the broker")
    db.flush()
    return out


def _locked(db: Session, stmt: object) -> list[Job]:
    # SKIP LOCKED: two sweepers (one per worker) split the work instead of both acting.
    # SQLite has no row locks: the sweep holds the database write lock instead, so a worker
    # renewing its lease waits for the sweep rather than being settled mid-renewal.
    write_lock(db)
    query = stmt.order_by(Job.created_at).limit(SWEEP_BATCH)  # type: ignore[attr-defined]
    return list(db.scalars(query.with_for_update(skip_locked=True)))


def _settle(db: Session, job: Job, now: datetime, out: SweepResult, *, reason: str,
            detail: str) -> None:
    previous = job.lease_owner
    job.lease_owner, job.lease_expires_at, job.updated_at = None, None, now
    if job.cancel_requested:
        lifecycle.set_final(db, job, state=JobState.CANCELLED, error=(
            "cancelled", f"cancelled by request while stranded: {detail}"))
        out.cancelled.append(job.id)
    elif job.attempts >= job.max_attempts:
        lifecycle.set_final(db, job, state=JobState.FAILED, error=(
            "worker_lost", f"gave up after {job.attempts} of {job.max_attempts} attempts: "
                           f"each ended without a result; last: {detail}"))
        out.failed.append(job.id)
    else:
        job.woken_at = now
        lifecycle.record_event(db, job, "requeued", {"reason": reason, "detail": detail,
                                                     "previous_owner": previous,
                                                     "attempts": job.attempts})
        out.requeue.append(job.id)

"""Webhooks are queued only after the job's final state is committed.

`lifecycle.set_final` calls `schedule`; the wake-up for the delivery task is published by a
session `after_commit` hook, so a receiver is never told about a state that was rolled
back, and nothing is published from inside the transaction. Publishing never raises into
the caller: a broker outage loses the notification (logged), never the job's result.
"""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.models import Job
from worker.celery_app import enqueue_notify

log = logging.getLogger(__name__)
PENDING = "tailor.webhooks"  # key in Session.info: [(job id, event)] to publish on commit


def schedule(db: Session, job: Job, kind: str) -> None:
    """Publish `kind` (`job.succeeded`, `version.registered`...) for `job` once `db`
    commits, if its spec names a `notify.url`."""
    if (job.spec or {}).get("notify"):
        db.info.setdefault(PENDING, []).append((job.id, kind))


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for job_id, kind in session.info.pop(PENDING, []):
        try:
            enqueue_notify(job_id, kind)
        except Exception:
            log.exception("webhook %s for job %s not queued (broker unreachable)", kind, job_id)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)

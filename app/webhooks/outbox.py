"""Webhooks are queued only after the job's final state is committed.

`lifecycle.set_final` calls `schedule`; the wake-up for the delivery task is published once
the session commits (`app.core.db.after_commit`), so a receiver is never told about a state
that was rolled back, and nothing is published from inside the transaction. Publishing
never raises into the caller: a broker outage loses the notification (logged), never the
job's result.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.core.db import after_commit
from app.models import Job
from worker.celery_app import enqueue_notify

log = logging.getLogger(__name__)


def schedule(db: Session, job: Job, kind: str) -> None:
    """Publish `kind` (`job.succeeded`, `version.registered`...) for `job` once `db`
    commits, if its spec names a `notify.url`."""
    if (job.spec or {}).get("notify"):
        after_commit(db, _publish, job.id, kind)


def _publish(job_id: str, kind: str) -> None:
    try:
        enqueue_notify(job_id, kind)
    except Exception:
        log.exception("webhook %s for job %s not queued (broker unreachable)", kind, job_id)

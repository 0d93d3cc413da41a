"""Thin Celery tasks: they take ids, and the runner reloads everything from the database."""

from __future__ import annotations

from celery import Task

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Job
from worker.celery_app import TASK_NAME, app
from worker.runner import HELD, run_job


@app.task(name=TASK_NAME, bind=True, acks_late=True, max_retries=None)
def run_job_task(self: Task, job_id: str) -> str:
    """Run a distillation job. If another worker holds it, look again after its lease."""
    outcome = run_job(job_id)
    if outcome == HELD:
        with session_scope() as db:
            job = db.get(Job, job_id)
            if job is None or job.is_final:
                return outcome
        # The holder may be alive (duplicate delivery) or dead (lease will expire): either way
        # a fresh message after one lease period settles it without losing the job.
        raise self.retry(countdown=get_settings().job_lease_seconds)
    return outcome

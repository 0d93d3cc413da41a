"""Thin Celery tasks: they take ids, and the runner reloads everything from the database."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

import worker.distill.engine  # noqa: F401  (see below)
from app.core.config import get_settings
from app.core.db import UNAVAILABLE
from app.jobs import seam
from worker import heartbeat, sweeper
from worker.celery_app import NOTIFY_TASK, SHARD_TASK, TASK_NAME, app
from worker.runner import DB_DOWN, run_job
from worker.shards import run_shard

# The engine (torch, transformers) is imported above, in the worker's main process, before
# the pool forks: children start warm and claim their first job at once instead of after
# seconds of imports, during which the job looks unclaimed.

log = logging.getLogger(__name__)
sweeper.install()
heartbeat.install()


@app.task(name=TASK_NAME, bind=True, acks_late=True)
def run_job_task(self: Task, job_id: str) -> str:
    """Run a distillation job; a duplicate message for a held or finished job just ends.

    No retries here: when a worker dies, the sweeper re-wakes its job once the lease expires,
    so a second delivery never needs to wait around for the first.
    """
    try:
        return run_job(job_id, node=self.request.hostname)
    except UNAVAILABLE:
        log.warning("job %s: database unavailable before the run started", job_id)
        return DB_DOWN


@app.task(name=SHARD_TASK, acks_late=True)
def annotate_shard_task(job_id: str, call: str, index: int, teacher_uri: str,
                        shard: dict[str, Any], precision: str = "float32") -> str:
    """Annotate one shard of a job's teacher pass (worker/shards.py) in the coordinator's
    teacher precision (a message from before the setting existed: float32). No retries: the
    job's coordinator redoes a shard whose lease expired, and fails the job on a teacher
    error."""
    return run_shard(job_id, call, index, teacher_uri, shard, precision)


_webhooks = get_settings()


@app.task(name=NOTIFY_TASK, bind=True, acks_late=True,
          autoretry_for=(seam.DeliveryFailed, *UNAVAILABLE), retry_jitter=True,
          max_retries=_webhooks.webhook_max_retries,
          retry_backoff=_webhooks.webhook_retry_backoff_seconds,
          retry_backoff_max=_webhooks.webhook_retry_backoff_max_seconds)
def notify_task(self: Task, job_id: str, event: str) -> str:
    """Deliver one webhook (app.webhooks.delivery); a failed attempt is published again
    with exponential backoff (full jitter) until max_retries, never touching the job."""
    return seam.deliver(job_id, event, attempt=self.request.retries + 1,
                        last=self.request.retries >= (self.max_retries or 0))

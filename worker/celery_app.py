"""The Celery app. The message only wakes a worker; the job row in the database is the truth.

Embedded mode uses Celery's filesystem transport under TAILOR_HOME; distributed mode uses Redis.
No result backend: the API never reads Celery results.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, signals

from app.core.config import Settings, get_settings
from app.core.secrets import install_log_redaction

QUEUE = "distill"
TASK_NAME = "tailor.run_job"
# One slice of a job's teacher pass (worker/shards.py), on the same queue as the jobs: any
# worker that can run a job can annotate for one.
SHARD_TASK = "tailor.annotate_shard"
# Webhook deliveries have their own queue: the sweeper reads `distill` as the list of jobs
# waiting for a worker, and a delivery must not wait behind distillation messages.
NOTIFY_QUEUE = "notify"
NOTIFY_TASK = "tailor.notify"
# Redis redelivers an unacked message after this long. Jobs run for hours on big corpora,
# and our own lease decides who runs a job, so a long timeout only delays recovery of a
# message whose worker vanished before claiming; the worker sweeper covers the rest.
VISIBILITY_TIMEOUT_S = 12 * 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": settings.broker,
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_timeout_seconds,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_serializer": "json",
        "accept_content": ["json"],
    }
    if settings.broker.startswith("filesystem://"):
        folders = {name: settings.broker_dir / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]), "store_processed": False,
            "control_folder": str(folders["control"]), "polling_interval": 0.5,
        }
    else:
        conf["broker_transport_options"] = {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": settings.broker_timeout_seconds,
            "socket_timeout": settings.broker_timeout_seconds,
        }
    return conf


@lru_cache
def get_celery() -> Celery:
    app = Celery("tailor")
    app.conf.update(celery_config(get_settings()))
    return app


def enqueue_job(job_id: str) -> None:
    """Publish the wake-up message for a job; raises if the broker cannot take it."""
    get_celery().send_task(
        TASK_NAME, args=[job_id], queue=QUEUE,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                  "interval_step": 0.5, "interval_max": 1.0})


def enqueue_notify(job_id: str, event: str) -> None:
    """Publish a webhook delivery for `event` of job `job_id`; raises if the broker is down."""
    get_celery().send_task(
        NOTIFY_TASK, args=[job_id, event], queue=NOTIFY_QUEUE,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                  "interval_step": 0.5, "interval_max": 1.0})


def broker_reachable(*, retry: bool = True) -> bool:
    """Say whether the broker accepts a connection right now (`retry`: once more after a
    failed attempt)."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1 if retry else 0,
                                   timeout=get_settings().broker_timeout_seconds)
        return True
    except Exception:
        return False


# `celery -A worker.celery_app worker` looks for a module-level `app`, then imports tasks.
app = get_celery()
app.conf.imports = ("worker.tasks",)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_logs(logger: logging.Logger, **_: Any) -> None:
    # Worker logs carry tracebacks of failed jobs; configured secrets never reach them.
    install_log_redaction(logger)

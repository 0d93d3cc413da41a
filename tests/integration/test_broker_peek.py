"""The sweeper's peek at Redis: waiting messages, and ones a worker has just taken."""

from __future__ import annotations

import pytest
from celery import Celery
from kombu import Connection

from app.core.config import Settings
from worker.broker_view import waiting_job_ids
from worker.celery_app import QUEUE, TASK_NAME

pytestmark = pytest.mark.integration


def test_redis_messages_waiting_or_just_delivered_name_their_jobs(redis_url: str):
    settings = Settings(broker_url=redis_url)
    sender = Celery(broker=redis_url)
    for job_id in ("job_00000000000000aa", "job_00000000000000bb"):
        sender.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
    sender.close()
    assert waiting_job_ids(settings, QUEUE, 60) == {"job_00000000000000aa",
                                                    "job_00000000000000bb"}
    with Connection(redis_url) as conn:
        queue = conn.SimpleQueue(QUEUE)
        taken = queue.get(timeout=5)  # delivered, not acknowledged: a worker about to claim
        assert waiting_job_ids(settings, QUEUE, 60) == {"job_00000000000000aa",
                                                        "job_00000000000000bb"}
        # Delivered long ago (here: "recent" means the last 0 s) counts as not waiting.
        assert len(waiting_job_ids(settings, QUEUE, 0) or ()) == 1
        taken.ack()
        queue.close()

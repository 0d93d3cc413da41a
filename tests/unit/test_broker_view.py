"""The sweeper's peek at the broker reads real Celery messages (filesystem transport)."""

from __future__ import annotations

from app.core.config import get_settings
from worker.broker_view import waiting_job_ids
from worker.celery_app import QUEUE, SHARD_TASK, enqueue_job, get_celery


def test_waiting_messages_name_their_jobs(embedded):
    settings = get_settings()
    assert waiting_job_ids(settings, QUEUE, 60) == set()
    enqueue_job("job_00000000000000aa")
    enqueue_job("job_00000000000000bb")
    enqueue_job("job_00000000000000aa")
    assert waiting_job_ids(settings, QUEUE, 60) == {"job_00000000000000aa",
                                                    "job_00000000000000bb"}
    assert waiting_job_ids(settings, "other-queue", 60) == set()
    # An annotation shard names its job too, but it is no wake-up: a stranded job whose
    # shards still wait must be re-woken all the same.
    get_celery().send_task(SHARD_TASK, args=["job_00000000000000cc", "0" * 32, 0, "uri", {}],
                           queue=QUEUE)
    assert waiting_job_ids(settings, QUEUE, 60) == {"job_00000000000000aa",
                                                    "job_00000000000000bb"}


def test_an_unreadable_broker_is_unknown_not_empty(embedded, monkeypatch):
    monkeypatch.setenv("TAILOR_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TAILOR_BROKER_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    assert waiting_job_ids(get_settings(), QUEUE, 60) is None

"""The worker's sweeper: at startup and every TAILOR_JOB_SWEEP_SECONDS, re-wake stranded jobs.

Celery alone loses a job whose worker is SIGKILLed (the filesystem transport deleted the
message on receipt; Redis gives it back only after its 12 h visibility timeout). The job row
knows better: an expired lease means its worker is gone. The sweeper runs in every worker's
main process, settles such jobs (app.jobs.seam.sweep) and publishes their wake-ups, so a live
worker resumes them from their last checkpoint within about one lease.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from app.core.config import Settings, get_settings
from app.jobs import seam
from worker.broker_view import waiting_job_ids
from worker.celery_app import QUEUE, enqueue_job
from worker.periodic import PeriodicThread

log = logging.getLogger(__name__)


class Sweeper(PeriodicThread):
    """Sweeps every TAILOR_JOB_SWEEP_SECONDS (see PeriodicThread)."""

    what = "sweep"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "tailor-sweeper", settings.job_sweep_seconds)

    def tick(self) -> seam.SweepResult:
        return self.sweep_once()

    def sweep_once(self) -> seam.SweepResult:
        """Settle stranded jobs and publish their wake-ups; return what was done."""
        waiting = waiting_job_ids(self.settings, QUEUE, self.settings.job_requeue_seconds)
        with self.sessions.begin() as db:  # committed before any wake-up is published
            result = seam.sweep(db, requeue_after_s=self.settings.job_requeue_seconds,
                                waiting=waiting)
        for job_id in result.requeue:
            try:
                enqueue_job(job_id)
            except Exception as exc:  # the job stays unclaimed; the next sweeps retry it
                log.warning("could not re-wake job %s: %s", job_id, exc)
        if result.requeue or result.failed or result.cancelled:
            log.info("sweeper: re-woke %s, failed %s, cancelled %s",
                     result.requeue, result.failed, result.cancelled)
        return result


_running: list[Sweeper] = []


def _start(**_: Any) -> None:
    if not _running:
        sweeper = Sweeper(get_settings())
        _running.append(sweeper)
        sweeper.start()


def _stop(**_: Any) -> None:
    while _running:
        _running.pop().stopped.set()


def install() -> None:
    """Run a sweeper in the worker's main process while it consumes (not in pool children)."""
    worker_ready.connect(_start, weak=False)
    worker_shutdown.connect(_stop, weak=False)

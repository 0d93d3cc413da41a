"""Runs one job: claim its lease, run the engine with progress and cancel checks, register.

Called by the thin Celery task. Everything it reads or writes in the database goes through
the seam (app.jobs.seam), one step per transaction. A heartbeat thread renews the lease while
the engine works; if the lease is lost, the run stops at its next progress step without
writing anything.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from app.core.config import get_settings
from app.core.db import UNAVAILABLE, session_scope
from app.core.errors import AppError
from app.jobs import seam
from app.models import JobState
from worker.distill.stages import Stage
from worker.shards import CeleryShards

log = logging.getLogger(__name__)
PROGRESS_MIN_INTERVAL_S = 1.0  # progress rows at most once a second; phase changes always
HELD = seam.HELD
DB_DOWN = "database unavailable; the sweeper resumes the job when its lease expires"
# Ids come from broker messages; anything else is refused before it can name a directory.
JOB_ID = re.compile(r"^job_[0-9a-f]{16}$")
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Heartbeat(threading.Thread):
    """Renews the job lease every third of its length until stopped or lost."""

    def __init__(self, job_id: str, owner: str, lease_seconds: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.owner, self.lease_seconds = job_id, owner, lease_seconds
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_seconds / 3):
            try:
                with session_scope() as db:
                    if not seam.heartbeat(db, self.job_id, self.owner,
                                          lease_seconds=self.lease_seconds):
                        self.lost.set()
                        return
            except Exception:  # a DB blip: keep trying until the lease would expire
                log.warning("lease renewal for %s failed", self.job_id, exc_info=True)


class JobProgress:
    """The engine's progress callback: writes progress, raises Cancelled when asked to stop.

    `state` is the engine's Stage, or the runner's own JobState.REGISTERING."""

    def __init__(self, job_id: str, owner: str, heartbeat: Heartbeat) -> None:
        self.job_id, self.owner, self.heartbeat = job_id, owner, heartbeat
        self._last_write = 0.0
        self._last_step: tuple[str, str] | None = None
        self._restart = True  # until the attempt's first step is recorded

    def __call__(self, state: Stage | JobState, phase: str, fraction: float,
                 metrics: dict[str, Any] | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        from worker.distill.engine import Cancelled

        if self.heartbeat.lost.is_set():
            raise seam.LeaseLost(self.job_id)
        now = time.monotonic()
        step = (state, phase)
        # One write a second at most within a step, losses included (a fast GPU steps many
        # times a second): the live loss chart thins out, the phase summary keeps them all.
        if step == self._last_step and now - self._last_write < PROGRESS_MIN_INTERVAL_S:
            return
        self._last_write, self._last_step = now, step
        try:
            with session_scope() as db:
                seam.advance(db, self.job_id, self.owner, stage=state, phase=phase,
                             progress=fraction, detail=detail,
                             event_data=_event_data(metrics, detail), restart=self._restart)
            self._restart = False
        except seam.CancelRequested as exc:
            raise Cancelled() from exc
        except UNAVAILABLE:
            # A database outage must not throw away hours of work: keep computing. The lease
            # decides: if it expires meanwhile, the next write raises LeaseLost.
            log.warning("progress for %s not recorded (database unavailable)", self.job_id)


def _event_data(metrics: dict[str, Any] | None, detail: dict[str, Any] | None
                ) -> dict[str, Any] | None:
    """A progress event's data: the step's metrics (losses) and the stage's counts."""
    if detail is None:
        return metrics
    return {**(metrics or {}), "progress_detail": detail}


def run_job(job_id: str, node: str | None = None) -> str:
    """Run a job to a final state (or give it back); return what happened, for logs.

    `node` is the Celery node name of the worker running it (`tailor-<pid>@<host>`), recorded
    on the job as its `worker`; None (a direct call) records the lease owner id instead.
    """
    from worker.distill.config import ConfigError
    from worker.distill.engine import Cancelled, DistillData, EngineError, run
    from worker.distill.judge import JudgeError
    from worker.distill.sources import ModelSourceError
    from worker.distill.student import ArtifactError
    from worker.distill.teachers import TeacherError

    settings = get_settings()
    owner = WORKER_ID
    if not JOB_ID.match(job_id):
        log.warning("refusing a message for malformed job id %r", job_id[:80])
        return "malformed job id"
    try:
        with session_scope() as db:
            claimed = seam.claim(db, job_id, owner, lease_seconds=settings.job_lease_seconds,
                                 worker=node)
    except seam.NotClaimed as exc:
        # Unknown, final, held by a live worker, or cancelled / out of attempts while
        # stranded: the holder or the sweeper settles it; this message has nothing to do.
        return exc.reason
    log.info("job %s claimed by %s (attempt %d of %d)", job_id, claimed.worker,
             claimed.attempt, claimed.max_attempts)
    spec, attempts = claimed.spec, claimed.attempt
    with session_scope() as db:
        texts = seam.read_data(db, spec)
    heartbeat = Heartbeat(job_id, owner, settings.job_lease_seconds)
    heartbeat.start()
    progress = JobProgress(job_id, owner, heartbeat)
    workdir = job_workdir(job_id)
    try:
        progress(Stage.ANNOTATING, "start", 0.0)
        cfg = seam.engine_config(spec)
        if settings.torch_threads:  # else torch's own choice: every core of this machine
            import torch

            torch.set_num_threads(settings.torch_threads)
        data = DistillData(texts.corpus, texts.eval_texts, texts.eval_labels)
        # Distributed: teacher passes fan out to every worker; embedded: all in this process.
        shards = (None if settings.broker.startswith("filesystem://")
                  else CeleryShards(job_id, str(cfg.teacher.model), settings))
        result = run(cfg, data, workdir=workdir, cache_dir=settings.cache,
                     progress=progress, device=settings.device,
                     sources=settings.source_policy, index_url=settings.pypi_index_url,
                     shards=shards)
        progress(JobState.REGISTERING, "register", 0.98)
        with session_scope() as db:  # the version and the final state in one transaction
            version = seam.register(db, claimed, result, artifacts_root=settings.artifacts)
        return f"succeeded as {claimed.name}:{version} (attempt {attempts})"
    except (Cancelled, seam.CancelRequested):
        _finish(job_id, owner, JobState.CANCELLED, ("cancelled", "cancelled by request"))
        return "cancelled"
    except seam.LeaseLost:
        return "lease lost; another worker owns the job"
    except UNAVAILABLE:
        log.warning("job %s: database unavailable", job_id, exc_info=True)
        return DB_DOWN
    except ConfigError as exc:
        _finish(job_id, owner, JobState.FAILED, ("invalid_config", str(exc)))
    except (EngineError, ModelSourceError, TeacherError, JudgeError, ArtifactError,
            AppError) as exc:
        _finish(job_id, owner, JobState.FAILED, (exc.code, exc.message))
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        # The type only: a third-party message may quote a file it read or a header it sent,
        # and the job's error is shown to whoever submitted it. The log has the traceback.
        _finish(job_id, owner, JobState.FAILED, (
            "internal_error", f"internal error ({type(exc).__name__}); the worker log has "
                              f"the traceback for job {job_id}"))
    finally:
        heartbeat.stopped.set()
    return "failed"


def _finish(job_id: str, owner: str, state: JobState, error: tuple[str, str]) -> None:
    with session_scope() as db:
        seam.finish(db, job_id, owner, state=state, error=error)


def job_workdir(job_id: str) -> Path:
    """Where a job keeps its checkpoints and student files (inside the artifact store)."""
    return seam.job_workdir(job_id)

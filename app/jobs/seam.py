"""The worker's one way into the service: claim, heartbeat, advance, register, finish.

`worker/` (runner, sweeper, the liveness heartbeat, the webhook task) imports this module
and no other service: what a job run needs from the database passes through here, as plain
data. It lives on the service side because it is the service's contract. It maps the
engine's stages (worker.distill.stages.Stage) onto job states and enforces the job state
machine (app.models.job.can_transition, through app.jobs.lifecycle): an illegal step
raises `IllegalTransition`. Each function takes the caller's session and only flushes;
the caller's session scope commits, one step per transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.secrets import redact
from app.datasets.service import read_records
from app.jobs import files, lifecycle, recovery, service
from app.jobs.lifecycle import IllegalTransition, LeaseLost
from app.jobs.recovery import SweepResult
from app.models import Job, JobState
from app.ops.workers import beat, forget, liveness
from app.registry.service import register_version
from app.webhooks.delivery import DeliveryFailed, deliver
from worker.distill.config import EngineConfig
from worker.distill.result import RunResult
from worker.distill.stages import Stage

__all__ = [
    "STAGE_STATES", "CancelRequested", "Claim", "DeliveryFailed", "IllegalTransition",
    "JobData", "LeaseLost", "NotClaimed", "SweepResult", "advance", "beat", "claim",
    "deliver", "engine_config", "finish", "forget", "heartbeat", "job_state", "job_workdir",
    "liveness",
    "read_data", "register", "sweep",
]

# The job state each engine stage runs in. Registering is the service's own step (`register`).
STAGE_STATES: dict[Stage, JobState] = {
    Stage.ANNOTATING: JobState.ANNOTATING,
    Stage.DISTILLING: JobState.DISTILLING,
    Stage.EVALUATING: JobState.EVALUATING,
}
HELD = "lease held elsewhere"


class NotClaimed(Exception):
    """The job is not this worker's to run; `reason` says why (for the worker's log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CancelRequested(Exception):
    """Someone asked the job to stop: end the run, then `finish` it as cancelled."""


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds (its lease is `owner`'s), with what its run needs.

    Args:
        attempt: this attempt's number, 1-based, of `max_attempts`.
        spec: the stored job spec (the engine's config is `engine_config(spec)`).
        submitted: (owner key id, created_at) of the job; registering checks that the
            model name is still the job's to use.
    """

    job_id: str
    owner: str
    worker: str
    attempt: int
    max_attempts: int
    spec: dict[str, Any]
    submitted: tuple[str, datetime]

    @property
    def name(self) -> str:
        """The model name the job registers under."""
        return str(self.spec["name"])


@dataclass(frozen=True)
class JobData:
    """A job's texts: the unlabeled corpus, and the labeled rows of its eval set."""

    corpus: list[str]
    eval_texts: list[str]
    eval_labels: list[str | list[str]]


def job_state(stage: Stage | JobState | str) -> JobState:
    """The job state of an engine stage (STAGE_STATES), or a job state itself."""
    if isinstance(stage, Stage):
        return STAGE_STATES[stage]
    return JobState(stage)


def claim(db: Session, job_id: str, owner: str, *, lease_seconds: int,
          worker: str | None = None) -> Claim:
    """Take the job's lease for `owner` (`worker`: its Celery node name) and count an attempt.

    Raises:
        NotClaimed: the job is unknown, final, held by a live lease, cancelled while
            stranded, or out of attempts (the holder or the sweeper settles it).
    """
    job = db.get(Job, job_id)
    if job is None:
        raise NotClaimed("unknown job")
    if job.is_final:
        raise NotClaimed(f"already {job.state}")
    claimed = lifecycle.claim(db, job_id, owner, lease_seconds, worker=worker)
    if claimed is None:
        raise NotClaimed(HELD)
    return Claim(job_id=job_id, owner=owner, worker=claimed.worker or owner,
                 attempt=claimed.attempts, max_attempts=claimed.max_attempts,
                 spec=dict(claimed.spec), submitted=(claimed.owner, claimed.created_at))


def read_data(db: Session, spec: dict[str, Any]) -> JobData:
    """The texts a job's spec names: its corpus (labels ignored) and its eval set's
    labeled rows (unlabeled ones are skipped)."""
    corpus = [t for t, _ in read_records(db=db, dataset_id=spec["data"]["dataset_id"])]
    eval_id = spec["data"].get("eval_dataset_id")
    labeled = [(t, lab) for t, lab in (read_records(db=db, dataset_id=eval_id) if eval_id
                                       else []) if lab is not None]
    return JobData(corpus, [t for t, _ in labeled], [lab for _, lab in labeled])


def engine_config(spec: dict[str, Any]) -> EngineConfig:
    """The engine's config for a stored spec (raises ConfigError naming a field)."""
    return service.engine_config(spec)


def job_workdir(job_id: str) -> Path:
    """Where a job keeps its checkpoints and student files (inside the artifact store)."""
    return files.job_workdir(job_id)


def heartbeat(db: Session, job_id: str, owner: str, *, lease_seconds: int) -> bool:
    """Renew our lease for `lease_seconds`; False means we lost it (another worker took the
    job over, or it ended)."""
    return lifecycle.renew(db, job_id, owner, lease_seconds)


def advance(db: Session, job_id: str, owner: str, *, stage: Stage | JobState, phase: str,
            progress: float, detail: dict[str, Any] | None = None,
            event_data: dict[str, Any] | None = None, restart: bool = False) -> None:
    """Record a step of the run: the stage's job state, `phase`, overall `progress` 0..1,
    the counted stage's `detail` (app.models.job.Job.progress_detail) and the event's data.
    `restart` marks the attempt's first step (it may go back to annotating).

    Raises:
        CancelRequested: a cancel was asked (nothing is written).
        LeaseLost: we no longer hold the job.
        IllegalTransition: the state machine refuses the step.
    """
    if lifecycle.is_cancel_requested(db, job_id):
        raise CancelRequested(job_id)
    lifecycle.advance(db, job_id, owner, state=job_state(stage), phase=phase,
                      progress=progress, progress_detail=detail, event_data=event_data,
                      restart=restart)


def register(db: Session, claimed: Claim, result: RunResult, *, artifacts_root: Path) -> int:
    """Register the run's student as the next version of the job's model and finish the job
    succeeded, in the caller's one transaction; return the version number.

    Raises:
        CancelRequested: a cancel was asked (checked under the job's row lock, so a cancel
            either lands before this and no version is registered, or finds the job final).
        LeaseLost: we no longer hold the job.
        IllegalTransition: the job is neither registering nor evaluating.
        Conflict: `model_name_taken` (app.registry.service.register_version).
    """
    job = lifecycle.hold(db, claimed.job_id, claimed.owner)
    if job.cancel_requested:
        raise CancelRequested(claimed.job_id)
    if job.state == JobState.EVALUATING:
        # The runner's `registering` step is a progress write, skipped when the database
        # does not answer; the finished run must not then fail as evaluating -> succeeded.
        lifecycle.move(job, JobState.REGISTERING)
        lifecycle.record_event(db, job, "state")
    version = register_version(db=db, job_id=claimed.job_id, name=claimed.name,
                               result=result, artifacts_root=artifacts_root,
                               submitted=claimed.submitted)
    lifecycle.finish(db, claimed.job_id, claimed.owner, state=JobState.SUCCEEDED,
                     metrics=result.metrics, model=(claimed.name, version),
                     warnings=result.warnings)
    return version


def finish(db: Session, job_id: str, owner: str, *, state: JobState,
           error: tuple[str, str] | None = None) -> bool:
    """End a job we hold in `state` with `error` (code, message; configured secrets are
    redacted from the message). False when it is already final or not ours.

    Raises:
        IllegalTransition: the state machine refuses `state` (succeeded comes only through
            `register`).
    """
    if error is not None:
        error = (error[0], redact(error[1]))
    return lifecycle.finish(db, job_id, owner, state=state, error=error)


def sweep(db: Session, *, requeue_after_s: float,
          waiting: Collection[str] | None) -> SweepResult:
    """Settle stranded jobs (app.jobs.recovery.sweep); publish the wake-ups it returns
    once the caller commits."""
    return recovery.sweep(db, requeue_after_s=requeue_after_s, waiting=waiting)

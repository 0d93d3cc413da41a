"""A distillation job and its state machine (DESIGN.md section 4). The DB is the truth."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow
from app.models.owned import Owned, idempotency_unique


class JobState(enum.StrEnum):
    QUEUED = "queued"
    ANNOTATING = "annotating"
    DISTILLING = "distilling"
    EVALUATING = "evaluating"
    REGISTERING = "registering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Node names come from the worker's `-n` option, of any length: stored cut to this.
WORKER_NAME_MAX = 255
FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# The happy path, in order; failed/cancelled may follow any non-final state.
PIPELINE = (JobState.QUEUED, JobState.ANNOTATING, JobState.DISTILLING,
            JobState.EVALUATING, JobState.REGISTERING, JobState.SUCCEEDED)
# Where every attempt of a job starts: the engine fetches its models again, then resumes
# from the checkpoints of the attempts before it.
RESTART_STATE = JobState.ANNOTATING


def can_transition(current: str, target: str, *, restart: bool = False) -> bool:
    """Say whether a job may move from `current` to `target` (app.jobs.lifecycle enforces it).

    Nothing follows a final state; failed and cancelled may follow any other. A job succeeds
    only from registering (its version is registered first). Otherwise it stays or moves
    forward along PIPELINE (a resumed run may skip what its checkpoints hold). `restart`
    marks the first step of an attempt: a re-claimed job goes back to RESTART_STATE,
    whatever state its last attempt reached.
    """
    if current in FINAL_STATES:
        return False
    if target in (JobState.FAILED, JobState.CANCELLED):
        return True
    if target == JobState.SUCCEEDED:
        return current == JobState.REGISTERING
    if current == target or (restart and target == RESTART_STATE):
        return True
    order = [s.value for s in PIPELINE]
    return target in order and current in order and order.index(target) > order.index(current)


class Job(Owned, Base):
    __tablename__ = "jobs"
    __table_args__ = (idempotency_unique("jobs"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True, default=JobState.QUEUED)
    phase: Mapped[str | None] = mapped_column(String(40))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # `[{"code", "message"}]` from the engine (worker/distill/warnings.py): results that
    # should not be trusted as they stand; an alias moves onto a warned version only by force.
    warnings: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list,
                                                           server_default=text("'[]'"))
    # While a counted stage runs (worker/distill/progress.py): `{"stage", "done", "total",
    # "unit", "rate_per_s", "eta_s", "updated_at"}`; None before, between and after.
    progress_detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The Celery node name (`tailor-<pid>@<host>`) of the worker that last claimed the job:
    # it holds the lease while the job runs, and stays once the job is final or stranded, so
    # an operator knows whose log to read.
    worker: Mapped[str | None] = mapped_column(String(WORKER_NAME_MAX))
    # When a wake-up message was last published; the worker sweeper re-wakes jobs whose
    # message was lost (broker restart, worker killed) once this is old enough.
    woken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique per owner
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

"""Jobs: validate and submit (enqueue after commit), read, list, cancel, delete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.broker import Broker
from app.core.config import get_settings
from app.core.db import after_commit, lock_row
from app.core.errors import Conflict, Invalid, NotFound, Unavailable
from app.core.ownership import by_idempotency_key, only_visible, replay, visible
from app.core.security import Principal
from app.jobs import checks, estimate, lifecycle
from app.jobs.schemas import JobCreate
from app.models import Dataset, Job, JobEvent, JobState, ModelVersion
from app.models.base import new_id, utcnow
from app.registry.service import refuse_taken_name
from app.webhooks.targets import TargetRefused
from worker.distill.config import ConfigError, EngineConfig
from worker.distill.sources import ModelSourceError, check_available, check_uri
from worker.distill.spec import complete_spec, load_config

log = logging.getLogger(__name__)


def normalized_spec(payload: JobCreate) -> dict[str, Any]:
    """The request with every default filled in, once (the same `complete_spec` the
    benchmarks use): what the worker runs and lineage records."""
    settings = get_settings()
    spec = complete_spec(payload.model_dump(), teacher_model=settings.default_teacher,
                         student_model=settings.default_student)
    if spec.get("notify") is None:  # absent, not null: specs without webhooks read as before
        spec.pop("notify", None)
    return spec


def engine_config(spec: dict[str, Any]) -> EngineConfig:
    """Build the engine's config from a stored spec (raises ConfigError naming a field)."""
    return load_config(spec)


def check_model_sources(spec: dict[str, Any]) -> None:
    """Refuse a teacher or student URI that is malformed, carries a key, lies outside the
    operator's TAILOR_MODEL_SOURCES, or (allowed, local) does not exist.

    The policy is checked on the URI's text before anything touches the disk, and its
    refusal is one fixed message: the answer for an existing path outside the policy is
    byte for byte the answer for a missing one.

    Raises:
        Invalid: 422 naming `teacher.model` / `student.model`, with the source's stable code
            (`invalid_model_uri`, `credentials_in_spec`, `model_source_not_allowed`,
            `model_not_found`).
    """
    policy = get_settings().source_policy
    for field in ("teacher", "student"):
        uri = spec[field]["model"]
        try:
            check_uri(uri)
            if field == "student" and uri.startswith("openai+"):
                raise ModelSourceError("invalid_model_uri",
                                       "the student must be a local encoder, not a server")
            policy.check(uri)
            check_available(uri)
        except ModelSourceError as exc:
            raise Invalid(f"{field}.model", exc.message, code=exc.code) from exc


def check_notify_url(url: str) -> None:
    """Refuse a webhook target the operator's policy refuses, or one whose name resolves to
    an address it refuses (a name that does not resolve now is checked again at each send).

    Raises:
        Invalid: 422 naming `notify.url`: `webhooks_disabled` (no TAILOR_WEBHOOK_SECRET or
            TAILOR_WEBHOOK_ALLOW), `invalid_webhook_url`, `credentials_in_spec`,
            `webhook_target_not_allowed`.
    """
    settings = get_settings()
    policy = settings.webhook_policy
    try:
        if not settings.webhook_secret or not policy.enabled:
            raise TargetRefused("webhooks_disabled", "this server sends no webhooks (the "
                                "operator sets TAILOR_WEBHOOK_SECRET and TAILOR_WEBHOOK_ALLOW)")
        parts = policy.check_url(url)
        with contextlib.suppress(OSError, UnicodeError):  # unresolvable now: checked at send
            policy.resolve(parts)
    except TargetRefused as exc:
        raise Invalid("notify.url", exc.message, code=exc.code) from exc


def validate_spec(db: Session, spec: dict[str, Any], viewer: Principal) -> None:
    """Refuse at submission whatever can be refused cheaply, naming the field. Datasets that
    `viewer` may not see are refused exactly like absent ones."""
    try:
        cfg = engine_config(spec)
    except ConfigError as exc:
        raise Invalid(exc.field, exc.message) from exc
    check_model_sources(spec)
    if spec.get("notify"):
        check_notify_url(spec["notify"]["url"])
    refuse_taken_name(db, spec["name"], viewer)
    data = spec["data"]
    if visible(db.get(Dataset, data["dataset_id"]), viewer) is None:
        raise Invalid("data.dataset_id", f"no dataset with id {data['dataset_id']!r}",
                      code="dataset_not_found")
    if data.get("eval_dataset_id"):
        eval_ds = visible(db.get(Dataset, data["eval_dataset_id"]), viewer)
        if eval_ds is None:
            raise Invalid("data.eval_dataset_id", f"no dataset with id {data['eval_dataset_id']!r}",
                          code="dataset_not_found")
        if eval_ds.labeled_rows == 0:
            raise Invalid("data.eval_dataset_id", "the eval dataset has no labels",
                          code="eval_unlabeled")
    checks.check_submission(db, spec, cfg)


def lock_datasets(db: Session, spec: dict[str, Any], viewer: Principal, *,
                  lock: bool = True) -> None:
    """Take the row locks of the datasets a job names (unless `lock` is False), and check
    again that they exist.

    DELETE /datasets takes the same lock (app.datasets.service.delete_dataset) before it
    looks for jobs that use the dataset, so a dataset being deleted is never picked by a new
    job. On SQLite this is the database write lock, taken only now, after the slow checks.

    Raises:
        Invalid: 422 `dataset_not_found` naming `data.dataset_id` / `data.eval_dataset_id`.
    """
    for field in ("dataset_id", "eval_dataset_id"):
        dataset_id = spec["data"].get(field)
        row = (lock_row(db, Dataset, dataset_id) if lock
               else db.get(Dataset, dataset_id, populate_existing=True)) if dataset_id else None
        if dataset_id and visible(row, viewer) is None:
            raise Invalid(f"data.{field}", f"no dataset with id {dataset_id!r}",
                          code="dataset_not_found")


def submit_job(*, db: Session, payload: JobCreate, principal: Principal,
               idempotency_key: str | None = None, broker: Broker) -> tuple[Job, bool]:
    """Create a queued job owned by `principal`; return (job, created). Replays on a key the
    same principal reused. A worker is woken once the caller commits (`after_commit`): it
    must find the row it is woken for.

    Raises:
        Invalid: 422 naming the field (see `validate_spec`).
        Unavailable: 503 `broker_unavailable` when the broker does not answer; nothing is
            created. Should it fail between this check and the wake-up, the job stays
            queued and the worker sweeper wakes it (TAILOR_JOB_REQUEUE_SECONDS).
    """
    spec = normalized_spec(payload)
    request_hash = _spec_hash(spec)
    if idempotency_key:
        existing = by_idempotency_key(db, Job, principal.key_id, idempotency_key)
        if existing is not None:
            return replay(existing, request_hash), False
    try:
        validate_spec(db, spec, principal)
    except Invalid:
        # A dataset deleted while the checks read it looks empty to them: name the cause.
        lock_datasets(db, spec, principal, lock=False)
        raise
    if not broker.reachable(retry=False):  # before the locks: a refusal may take a moment
        raise Unavailable("the job queue is unreachable; nothing was created, retry later",
                          code="broker_unavailable")
    lock_datasets(db, spec, principal)  # held until commit: a delete cannot slip in between
    job = Job(id=new_id("job"), name=payload.name, state=JobState.QUEUED, progress=0.0,
              spec=spec, metrics={}, attempts=0, max_attempts=get_settings().job_max_attempts,
              owner=principal.key_id, idempotency_key=idempotency_key,
              request_hash=request_hash, woken_at=utcnow())
    db.add(job)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        existing = by_idempotency_key(db, Job, principal.key_id, idempotency_key)
        if existing is None:
            raise
        return replay(existing, request_hash), False
    lifecycle.record_event(db, job, "state")
    after_commit(db, _wake, broker, job.id)
    return job, True


def _wake(broker: Broker, job_id: str) -> None:
    try:
        broker.enqueue_job(job_id)
    except Exception as exc:  # the row is committed: the sweeper wakes the job instead
        log.warning("job %s committed but not woken (%s); the worker sweeper wakes it",
                    job_id, type(exc).__name__)


def dry_run(*, db: Session, payload: JobCreate, principal: Principal,
            idempotency_key: str | None = None) -> dict[str, Any]:
    """Validate `payload` exactly as `submit_job` does and estimate its cost; create nothing
    (no job row, no idempotency record, no message).

    Returns `{"dry_run": True, "estimate": ...}` (shape in app.jobs.estimate.estimate_job).
    Raises the same Invalid (422) a real submission of this payload would, including
    `idempotency_mismatch` for an Idempotency-Key this key already used with another body.
    """
    spec = normalized_spec(payload)
    if idempotency_key:
        existing = by_idempotency_key(db, Job, principal.key_id, idempotency_key)
        if existing is not None:
            replay(existing, _spec_hash(spec))
    validate_spec(db, spec, principal)
    return {"dry_run": True, "estimate": estimate.estimate_job(db, spec, engine_config(spec))}


def _spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def get_job(*, db: Session, job_id: str, viewer: Principal) -> Job:
    """The job if `viewer` may see it; NotFound otherwise (absent or another key's)."""
    job = visible(db.get(Job, job_id), viewer)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


def list_jobs(*, db: Session, viewer: Principal, state: str | None, name: str | None,
              limit: int, offset: int) -> list[Job]:
    """The jobs `viewer` may see, newest first, optionally of one state and name."""
    stmt = only_visible(select(Job), Job, viewer).order_by(Job.created_at.desc(), Job.id)
    if state:
        stmt = stmt.where(Job.state == state)
    if name:
        stmt = stmt.where(Job.name == name)
    return list(db.scalars(stmt.limit(limit).offset(offset)))


def cancel_job(*, db: Session, job_id: str, viewer: Principal) -> Job:
    """Ask a job to stop; a queued job stops at once, a running one at its next step.
    Another key's job is NotFound, like an absent one."""
    job = visible(lock_row(db, Job, job_id), viewer)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    if job.is_final:
        raise Conflict(f"job {job_id} is already {job.state}", code="job_final")
    job.cancel_requested = True
    job.updated_at = utcnow()
    if job.lease_owner is None:  # no worker runs it: stop it now rather than at a claim
        lifecycle.set_final(db, job, state=JobState.CANCELLED, error=(
            "cancelled", "cancelled by request while no worker was running it"))
    else:
        lifecycle.record_event(db, job, "cancel_requested")
    db.flush()
    return job


def delete_job(*, db: Session, job_id: str, viewer: Principal) -> list[str]:
    """Delete a final job and its events; return the artifact paths of the versions it
    registered, which stay (the caller removes the rest of its work files once it commits,
    with `app.jobs.files.remove_work_files`). Its versions keep their `job_id` as lineage.

    Raises:
        NotFound: absent, or another key's (404, the same answer).
        Conflict: `job_not_final` (409) while it is queued or running: cancel it first.
    """
    job = visible(lock_row(db, Job, job_id), viewer)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    if not job.is_final:
        raise Conflict(f"job {job_id} is {job.state}; only a succeeded, failed or cancelled "
                       "job can be deleted (cancel it first)", code="job_not_final",
                       details={"state": job.state})
    kept = list(db.scalars(select(ModelVersion.artifact_path)
                           .where(ModelVersion.job_id == job_id)))
    db.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    db.delete(job)
    db.flush()
    return kept


def events_after(*, db: Session, job_id: str, after_id: int) -> list[JobEvent]:
    stmt = (select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
            .order_by(JobEvent.id).limit(500))
    return list(db.scalars(stmt))


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "state": job.state, "phase": job.phase,
        "progress": round(job.progress or 0.0, 4),
        "progress_detail": None if job.is_final else job.progress_detail,
        "metrics": job.metrics or {},
        "warnings": job.warnings or [],
        "error": ({"code": job.error_code, "message": job.error_message or ""}
                  if job.error_code else None),
        "model": ({"name": job.model_name, "version": job.model_version}
                  if job.model_version is not None else None),
        "attempts": job.attempts, "cancel_requested": job.cancel_requested, "spec": job.spec,
        "owner": job.owner, "worker": job.worker, "lease_expires_at": job.lease_expires_at,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
    }

"""The model registry: immutable versions with unique increasing numbers, movable aliases."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, defer

from app.core.db import lock_row
from app.core.errors import Conflict, Invalid, NotFound
from app.core.security import Principal
from app.models import Job, ModelAlias, ModelVersion, RegisteredModel
from app.models.base import MAX_INT, utcnow
from app.models.job import FINAL_STATES
from app.models.owned import ADMIN_OWNER
from app.registry.card import render_card
from worker.distill.result import RunResult

# \Z, not $ (which also matches before a final newline: "crisis\n" named crisis), and [0-9],
# not \d (which matches every script's digits: "crisis:\u0663" named version 3).
MODEL_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.\-]{0,63})"
                       r"(?::(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_.\-]{1,64}))?\Z")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}\Z")
# /classify resolves a reference per request: leave the large JSON columns unread.
SERVING_ONLY = (defer(ModelVersion.metrics), defer(ModelVersion.lineage),
                defer(ModelVersion.card))


def register_version(*, db: Session, job_id: str, name: str, result: RunResult,
                     artifacts_root: Path, submitted: tuple[str, datetime] | None = None
                     ) -> int:
    """Record a finished student (what `engine.run` returned) as the next version of `name`;
    return its number. Idempotent per job.

    Numbers come from one atomic step in both databases (`_next_number`), taken under the
    model's row lock, so parallel registrations get 1, 2, 3 ... with no gap and no
    collision. `submitted` is the job's (owner, created_at): when given, the name must still
    be the job's to use (`refuse_taken_name`), checked under the same lock. The caller
    commits.

    Raises:
        Conflict: `model_name_taken` when another key registered the name's first version
            after this job was submitted.
    """
    _ensure_model(db, name)
    lock_row(db, RegisteredModel, name)
    existing = db.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))
    if existing is not None:  # a retried job that crashed after registering
        return existing.version
    if submitted is not None:
        holder = name_holder(db, name)
        # Submission admitted the job (name free, its own, or an admin's); only a first
        # version another key registered since then makes the name someone else's.
        if holder is not None and holder[0] != submitted[0] and holder[1] > submitted[1]:
            raise Conflict(_taken_message(name), code="model_name_taken",
                           details={"field": "name"})
    number = _next_number(db, name)
    _hold_name(db, name, job_id)
    rel_path = str(Path(result.student_dir).resolve().relative_to(artifacts_root.resolve()))
    task = result.lineage["config"]["task"]
    version = ModelVersion(
        model_name=name, version=number, job_id=job_id, artifact_path=rel_path,
        files=result.files, base_model=result.base_model,
        labels=[lab["name"] for lab in task["labels"]], multi_label=bool(task["multi_label"]),
        metrics=result.metrics, lineage={**result.lineage, "job_id": job_id},
        warnings=list(result.warnings))
    version.card = render_card(name, number, version.metrics, version.lineage, version.warnings)
    db.add(version)
    db.flush()
    return version.version


def name_holder(db: Session, name: str) -> tuple[str, datetime] | None:
    """Who a model name belongs to: (owner of the job that registered its first version,
    when that version was registered); None while it never had a version. Recorded on the
    model row at the first registration (`_hold_name`), so deleting that job or version
    later changes nothing. A first version without a job row is admin's (failing closed,
    like rows older than ownership)."""
    model = db.get(RegisteredModel, name)
    if model is None or model.owner is None or model.owner_since is None:
        return None
    return model.owner, model.owner_since


def _hold_name(db: Session, name: str, job_id: str) -> None:
    # Called under the model's row lock; only the first registration writes the holder.
    model = db.get(RegisteredModel, name, populate_existing=True)
    assert model is not None  # _ensure_model created it
    if model.owner is None:
        job = db.get(Job, job_id)
        model.owner = job.owner if job is not None else ADMIN_OWNER
        model.owner_since = utcnow()


def refuse_taken_name(db: Session, name: str, viewer: Principal) -> None:
    """At submission: a non-admin key adds versions only to models it started (or new ones).

    Models are shared for reading and serving, but `/classify {"model": name}` serves the
    latest version: were any `train` key able to register under any name, it could replace
    what every other caller of that name gets. Admin keys may add versions to any model.

    Raises:
        Conflict: `model_name_taken` (409), naming the field, never the owner.
    """
    if viewer.sees_all:
        return
    holder = name_holder(db, name)
    if holder is not None and holder[0] != viewer.key_id:
        raise Conflict(_taken_message(name), code="model_name_taken",
                       details={"field": "name"})


def _taken_message(name: str) -> str:
    return (f"model {name!r} was started by another API key; only that key (or an admin key) "
            "adds versions to it: choose another job name")


def _ensure_model(db: Session, name: str) -> None:
    # INSERT ... ON CONFLICT DO NOTHING: creating a model twice at once is not an error in
    # either database (PostgreSQL waits for the other insert to commit, then skips).
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    db.execute(insert(RegisteredModel).values(name=name, latest_version=0, created_at=now,
                                              updated_at=now)
               .on_conflict_do_nothing(index_elements=["name"]))


def _next_number(db: Session, name: str) -> int:
    # One statement reads and bumps the counter, so no reader ever sees a number another
    # writer is about to take (SQLite >= 3.35 and PostgreSQL both support RETURNING).
    number = db.execute(update(RegisteredModel).where(RegisteredModel.name == name)
                        .values(latest_version=RegisteredModel.latest_version + 1,
                                updated_at=utcnow())
                        .returning(RegisteredModel.latest_version)
                        .execution_options(synchronize_session=False)).scalar_one()
    return int(number)


def list_models(*, db: Session, include_archived: bool = False) -> list[dict[str, Any]]:
    models = db.scalars(select(RegisteredModel).order_by(RegisteredModel.name)).all()
    aliases = _aliases(db)
    out = []
    for m in models:
        versions = [v for v in _versions(db, m.name) if include_archived or not v.archived]
        if not versions and not include_archived:
            continue
        out.append({"name": m.name, "latest_version": max((v.version for v in versions),
                                                           default=None),
                    "aliases": aliases.get(m.name, {}), "versions": len(versions),
                    "labels": versions[-1].labels if versions else [],
                    "updated_at": m.updated_at})
    return out


def get_model(*, db: Session, name: str, include_archived: bool = False) -> dict[str, Any]:
    """A model with its aliases and versions (archived ones only when asked for)."""
    model = db.get(RegisteredModel, name)
    if model is None:
        raise NotFound(f"no model named {name!r}", code="model_not_found")
    versions = _versions(db, name)
    live = [v for v in versions if not v.archived]
    return {"name": name, "latest_version": max((v.version for v in live), default=None),
            "aliases": _aliases(db).get(name, {}),
            "versions": [version_summary(v) for v in (versions if include_archived else live)]}


def get_version(*, db: Session, name: str, version: int, options: Sequence[Any] = ()
                ) -> ModelVersion:
    """One version, archived or not (404 when it does not exist)."""
    row = db.scalar(select(ModelVersion).options(*options).where(
        ModelVersion.model_name == name, ModelVersion.version == version))
    if row is None:
        if db.get(RegisteredModel, name) is None:
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        raise NotFound(f"model {name!r} has no version {version}", code="version_not_found")
    return row


def resolve_ref(*, db: Session, ref: str) -> ModelVersion:
    """Turn `name`, `name:3` or `name@alias` into a version row (404/409 when it cannot)."""
    match = MODEL_REF.match(ref)
    if not match:
        raise Invalid("model", f"{ref!r} is not a model reference (name, name:3 or name@alias)")
    name = match.group("name")
    if match.group("version"):
        version = int(match.group("version"))
        if version > MAX_INT:
            raise NotFound(f"model {name!r} has no version {version}", code="version_not_found")
        row = get_version(db=db, name=name, version=version, options=SERVING_ONLY)
        if row.archived:
            raise Conflict(f"{row.ref} is archived; unarchive it to serve it",
                           code="version_archived")
        return row
    if match.group("alias"):
        alias = db.get(ModelAlias, (name, match.group("alias")))
        if alias is None:
            raise NotFound(f"model {name!r} has no alias {match.group('alias')!r}",
                           code="alias_not_found")
        return get_version(db=db, name=name, version=alias.version, options=SERVING_ONLY)
    latest = db.scalar(select(ModelVersion).options(*SERVING_ONLY)
                       .where(ModelVersion.model_name == name, ModelVersion.archived.is_(False))
                       .order_by(ModelVersion.version.desc()).limit(1))
    if latest is None:
        running = db.scalar(select(Job).where(Job.name == name,
                                              Job.state.not_in([s.value for s in FINAL_STATES]))
                            .limit(1))
        if running is not None:
            # Models are shared but jobs are owned: name neither the job nor its state.
            raise Conflict(f"model {name!r} is still being trained; no version is "
                           "registered yet", code="model_not_ready")
        if db.get(RegisteredModel, name) is not None:
            raise NotFound(f"model {name!r} has no servable version (every one is archived "
                           "or deleted)", code="model_not_found")
        raise NotFound(f"no model named {name!r}", code="model_not_found")
    return latest


def set_alias(*, db: Session, name: str, alias: str, version: int,
              warm: Callable[[ModelVersion], None] | None = None,
              force: bool = False) -> dict[str, Any]:
    """Point `alias` at `version` (creating or moving it); `warm` loads it first.

    If warming fails (e.g. a checksum mismatch) the alias stays where it was. A version with
    warnings takes an alias only with `force` (409 `version_has_warnings` listing them).
    """
    if not ALIAS_NAME.match(alias):
        raise Invalid("alias", "an alias is 1-64 letters, digits, _ . - and starts with a letter")
    row = get_version(db=db, name=name, version=version)
    _refuse_archived(row)
    _refuse_warned(row, force)
    if warm is not None:  # before the lock: loading may take seconds
        warm(row)
    _lock_model(db, name)
    row = _reread(db, name, version)  # archived or deleted meanwhile?
    _refuse_archived(row)
    current = db.get(ModelAlias, (name, alias), populate_existing=True)
    if current is None:
        db.add(ModelAlias(model_name=name, alias=alias, version=version))
    else:
        current.version = version
    db.flush()
    return {"name": name, "alias": alias, "version": version}


def set_archived(*, db: Session, name: str, version: int, archived: bool) -> ModelVersion:
    """Archive (hide, refuse new aliases; files stay) or unarchive a version.

    A version an alias points at cannot be archived: move the alias first, so that archiving
    never silently breaks the traffic an alias carries.
    """
    get_version(db=db, name=name, version=version)
    _lock_model(db, name)
    row = _reread(db, name, version)
    if archived:
        _refuse_aliased(db, row)
    row.archived = archived
    db.flush()
    return row


def delete_version(*, db: Session, name: str, version: int) -> ModelVersion:
    """Delete an archived version no alias points at; return the deleted row (detached) so
    the caller can drop it from serving and remove its files (`remove_version_files`).

    The number stays taken: `registered_models.latest_version` is never lowered, so a later
    registration gets a higher number; the model row (and who holds the name) stays too.

    Raises:
        NotFound: `model_not_found` / `version_not_found` (404), as for an unknown version.
        Conflict: `version_not_archived` (archive it first, so nothing serves it through
            `name`) or `version_aliased` naming the aliases in `details.aliases` (409).
    """
    get_version(db=db, name=name, version=version)
    _lock_model(db, name)
    row = _reread(db, name, version)
    if not row.archived:
        raise Conflict(f"{row.ref} is not archived; archive it before deleting it",
                       code="version_not_archived")
    _refuse_aliased(db, row)
    db.delete(row)
    db.flush()
    return row


def remove_version_files(artifacts_root: Path, artifact_path: str) -> None:
    """Remove a deleted version's artifact folder, then the job folder that held it once
    empty (its job deleted earlier). Paths outside the store are left alone."""
    root = artifacts_root.resolve()
    folder = (root / artifact_path).resolve()
    if folder == root or not folder.is_relative_to(root):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent != root and parent.is_relative_to(root / "jobs") and parent != root / "jobs":
        try:
            parent.rmdir()  # only when empty: a job that still exists keeps its files
        except OSError:
            break
        parent = parent.parent


def _reread(db: Session, name: str, version: int) -> ModelVersion:
    # After taking the model's lock: what was read before it may have been archived,
    # unarchived or deleted by the writer we waited for.
    row = db.scalar(select(ModelVersion).where(ModelVersion.model_name == name,
                                               ModelVersion.version == version)
                    .execution_options(populate_existing=True))
    if row is None:
        raise NotFound(f"model {name!r} has no version {version}", code="version_not_found")
    return row


def _refuse_aliased(db: Session, row: ModelVersion) -> None:
    pointing = sorted(a.alias for a in db.scalars(select(ModelAlias).where(
        ModelAlias.model_name == row.model_name, ModelAlias.version == row.version)))
    if pointing:
        raise Conflict(f"{row.ref} is served by alias(es) {', '.join(pointing)}; move them "
                       "to another version first", code="version_aliased",
                       details={"aliases": pointing})


def _lock_model(db: Session, name: str) -> None:
    # The model's row lock orders alias moves, archiving and registration of one model, in
    # both databases; whatever was read before it must be re-read (or refreshed) after it.
    lock_row(db, RegisteredModel, name)


def _refuse_archived(row: ModelVersion) -> None:
    if row.archived:
        raise Conflict(f"{row.ref} is archived; it cannot take an alias",
                       code="version_archived")


def _refuse_warned(row: ModelVersion, force: bool) -> None:
    # Warnings are fixed at registration, so checking before the lock is enough.
    if row.warnings and not force:
        codes = ", ".join(w.get("code", "?") for w in row.warnings)
        raise Conflict(f"{row.ref} has warnings ({codes}); read them, then repeat the request "
                       'with "force": true to move the alias anyway',
                       code="version_has_warnings", details={"warnings": row.warnings})


def version_summary(v: ModelVersion) -> dict[str, Any]:
    student = v.metrics.get("student", {})
    teacher = v.metrics.get("teacher", {})
    return {"version": v.version, "created_at": v.created_at, "job_id": v.job_id,
            "archived": v.archived, "labels": v.labels,
            "student_macro_f1": student.get("eval", {}).get("macro_f1"),
            "teacher_macro_f1": teacher.get("eval", {}).get("macro_f1"),
            "holdout_agreement": student.get("holdout_agreement"),
            "warnings": v.warnings or [], "serving": serving_info(v)}


def serving_info(v: ModelVersion) -> dict[str, Any] | None:
    """What the ONNX backend serves `v` with, or None before it was compiled."""
    if v.serving_precision is None:
        return None
    return {"precision": v.serving_precision, "int8_agreement": v.int8_agreement,
            "agreement_texts": v.int8_agreement_texts}


def record_serving(*, db: Session, name: str, version: int, precision: str,
                   agreement: float | None, texts: int | None) -> None:
    """Record the precision a compiled `name:version` is served with and the measured int8
    agreement (a no-op for a version deleted meanwhile)."""
    db.execute(update(ModelVersion)
               .where(ModelVersion.model_name == name, ModelVersion.version == version)
               .values(serving_precision=precision, int8_agreement=agreement,
                       int8_agreement_texts=texts))


def version_detail(v: ModelVersion) -> dict[str, Any]:
    return {"name": v.model_name, "version": v.version, "job_id": v.job_id,
            "labels": v.labels, "multi_label": v.multi_label, "base_model": v.base_model,
            "files": v.files, "metrics": v.metrics, "warnings": v.warnings or [],
            "lineage": v.lineage, "card": v.card,
            "archived": v.archived, "created_at": v.created_at, "serving": serving_info(v)}


def _versions(db: Session, name: str) -> list[ModelVersion]:
    return list(db.scalars(select(ModelVersion).where(ModelVersion.model_name == name)
                           .order_by(ModelVersion.version)))


def _aliases(db: Session) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for a in db.scalars(select(ModelAlias)):
        out.setdefault(a.model_name, {})[a.alias] = a.version
    return out


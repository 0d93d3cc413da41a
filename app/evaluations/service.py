"""Evaluations: check the request, score the dataset with the version, store the result.

`evaluate` runs in the API process: the database steps in a thread, the scoring on the
serving pool (app.evaluations.scoring); the metrics are the engine's own
(worker.distill.metrics.classification_report), so a stored evaluation and a job's
evaluate phase score alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Invalid, NotFound
from app.core.ownership import by_idempotency_key, only_visible, replay, visible
from app.core.security import Principal
from app.evaluations import scoring
from app.evaluations.schemas import EvaluationCreate
from app.models import Dataset, DatasetRecord, Evaluation
from app.models.base import new_id
from app.registry.service import resolve_ref
from app.serving.batcher import MicroBatcher
from app.serving.pool import ModelPool
from app.serving.refs import RefCache
from worker.distill.metrics import classification_report

SHOWN_ROWS = 10  # rows named per unknown label in a 422; the count says how many in all


@dataclass(frozen=True)
class Plan:
    """What one evaluation scores: the version, the dataset, its labeled rows."""

    model: str
    version: int
    labels: list[str]
    multi_label: bool
    dataset: dict[str, str]  # id, name, sha256
    rows: list[int]
    texts: list[str]
    gold: list[str | list[str]]
    skipped_unlabeled: int


async def evaluate(pool: ModelPool, batcher: MicroBatcher, refs: RefCache,
                   body: EvaluationCreate, principal: Principal,
                   idempotency_key: str | None = None) -> dict[str, Any]:
    """Score `body.dataset_id` with `body.model` and store the result; return it as
    `evaluation_to_dict` shapes it. A repeated Idempotency-Key returns the stored one.

    Raises:
        NotFound / Conflict: the model reference, as /classify answers it.
        Invalid: `dataset_id` absent or not the caller's (`dataset_not_found`), without
            labels (`dataset_unlabeled`), over TAILOR_MAX_EVALUATION_ROWS labeled rows
            (`dataset_too_large`), with labels the version does not know (`labels_unknown`)
            or the wrong number of labels on a row (`labels_invalid`); a text the model
            cannot read (`records[i]`); a reused Idempotency-Key (`idempotency_mismatch`).
        Overloaded: the serving queue stayed full (429, Retry-After).
    """
    request_hash = _request_hash(body)
    plan = await run_in_threadpool(_prepare, body, principal, idempotency_key, request_hash)
    if isinstance(plan, dict):
        return plan  # replayed
    started = time.perf_counter()
    probs, truncated = await scoring.score(pool, batcher, refs, f"{plan.model}:{plan.version}",
                                           plan.labels, plan.texts, plan.rows)
    report = classification_report(probs, plan.gold, plan.labels, plan.multi_label)
    seconds = time.perf_counter() - started
    return await run_in_threadpool(_store, plan, body.model, report, truncated, seconds,
                                   principal.key_id, idempotency_key, request_hash)


def _request_hash(body: EvaluationCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def _prepare(body: EvaluationCreate, viewer: Principal, idempotency_key: str | None,
             request_hash: str) -> Plan | dict[str, Any]:
    with session_scope() as db:
        if idempotency_key:
            existing = by_idempotency_key(db, Evaluation, viewer.key_id, idempotency_key)
            if existing is not None:
                return evaluation_to_dict(replay(existing, request_hash))
        return plan_evaluation(db=db, body=body, viewer=viewer)


def plan_evaluation(*, db: Session, body: EvaluationCreate, viewer: Principal) -> Plan:
    """Resolve the version and read the dataset's labeled rows, refusing what cannot be
    scored (see `evaluate` for the errors)."""
    version = resolve_ref(db=db, ref=body.model)
    dataset = visible(db.get(Dataset, body.dataset_id), viewer)
    if dataset is None:  # another key's dataset answers exactly like an absent one
        raise Invalid("dataset_id", f"no dataset with id {body.dataset_id!r}",
                      code="dataset_not_found")
    if dataset.labeled_rows == 0:
        raise Invalid("dataset_id", f"dataset {dataset.id!r} has no labeled rows: upload the "
                      "texts with a `label` field or column to evaluate on them",
                      code="dataset_unlabeled")
    cap = get_settings().max_evaluation_rows
    if dataset.labeled_rows > cap:
        exc = Invalid("dataset_id", f"dataset {dataset.id!r} has {dataset.labeled_rows} "
                      f"labeled rows; one evaluation scores at most {cap} "
                      "(TAILOR_MAX_EVALUATION_ROWS): upload a sample", code="dataset_too_large")
        exc.details = {"field": "dataset_id", "rows": dataset.labeled_rows, "limit": cap}
        raise exc
    stmt = (select(DatasetRecord.idx, DatasetRecord.text, DatasetRecord.label)
            .where(DatasetRecord.dataset_id == dataset.id).order_by(DatasetRecord.idx))
    rows, texts, gold = [], [], []
    for idx, text, label in db.execute(stmt):
        if label is not None:
            rows.append(idx)
            texts.append(text)
            gold.append(label)
    labels, multi = list(version.labels), bool(version.multi_label)
    gold = check_gold(gold, rows, labels, multi, ref=version.ref, dataset_id=dataset.id)
    return Plan(version.model_name, version.version, labels, multi,
                {"id": dataset.id, "name": dataset.name, "sha256": dataset.sha256},
                rows, texts, gold, dataset.rows - len(rows))


def check_gold(gold: list[Any], rows: list[int], labels: list[str], multi_label: bool, *,
               ref: str, dataset_id: str) -> list[str | list[str]]:
    """The gold labels as `classification_report` takes them (a name per row, or a list of
    names for a multi-label version), refusing them all at once rather than row by row.

    Raises:
        Invalid: `labels_invalid` (a single-label version and a row with no label or several;
            details `rows`), `labels_unknown` (names the version does not know; details
            `unknown_labels`: `{name: {"count", "rows"}}` with the first SHOWN_ROWS rows).
    """
    known = set(labels)
    unknown: dict[str, list[int]] = {}
    wrong_arity: list[int] = []
    out: list[str | list[str]] = []
    for row, value in zip(rows, gold, strict=True):
        names = [value] if isinstance(value, str) else list(value)
        for name in names:
            if name not in known:
                unknown.setdefault(name, []).append(row)
        if not multi_label and len(names) != 1:
            wrong_arity.append(row)
        out.append(names if multi_label else names[0] if names else "")
    if unknown:
        shown = ", ".join(f"{name!r} (rows {_rows(found)})" for name, found in unknown.items())
        exc = Invalid("dataset_id", f"dataset {dataset_id!r} has labels that {ref} does not "
                      f"know: {shown}; its labels are {labels}", code="labels_unknown")
        exc.details = {"field": "dataset_id", "model_labels": labels, "unknown_labels": {
            name: {"count": len(found), "rows": found[:SHOWN_ROWS]}
            for name, found in unknown.items()}}
        raise exc
    if wrong_arity:
        exc = Invalid("dataset_id", f"{ref} is single-label, but rows {_rows(wrong_arity)} of "
                      f"dataset {dataset_id!r} have no label or several", code="labels_invalid")
        exc.details = {"field": "dataset_id", "count": len(wrong_arity),
                       "rows": wrong_arity[:SHOWN_ROWS]}
        raise exc
    return out


def _rows(rows: list[int]) -> str:
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return ", ".join(map(str, rows[:SHOWN_ROWS])) + more


def _store(plan: Plan, ref: str, report: dict[str, Any], truncated: int, seconds: float,
           owner: str, idempotency_key: str | None, request_hash: str) -> dict[str, Any]:
    with session_scope() as db:
        evaluation = Evaluation(
            id=new_id("ev"), owner=owner, model_name=plan.model, model_version=plan.version,
            model_ref=ref, dataset_id=plan.dataset["id"], dataset_name=plan.dataset["name"],
            dataset_sha256=plan.dataset["sha256"], labels=plan.labels,
            multi_label=plan.multi_label, n=report["n"],
            skipped_unlabeled=plan.skipped_unlabeled, truncated=truncated,
            accuracy=report["accuracy"], macro_f1=report["macro_f1"],
            micro_f1=report.get("micro_f1"), roc_auc=report.get("roc_auc"), ece=report["ece"],
            report={k: v for k, v in report.items() if k in REPORT_PARTS},
            seconds=round(seconds, 3), idempotency_key=idempotency_key,
            request_hash=request_hash)
        db.add(evaluation)
        try:
            db.flush()
        except IntegrityError:  # a concurrent request with the same key stored first
            db.rollback()
            existing = by_idempotency_key(db, Evaluation, owner, idempotency_key)
            if existing is None:
                raise
            return evaluation_to_dict(replay(existing, request_hash))
        return evaluation_to_dict(evaluation)


# What the report column keeps beyond the headline columns.
REPORT_PARTS = ("per_class", "confusion", "reliability", "majority")


def get_evaluation(*, db: Session, evaluation_id: str, viewer: Principal) -> Evaluation:
    """The evaluation if `viewer` may see it; NotFound otherwise (absent or another key's)."""
    evaluation = visible(db.get(Evaluation, evaluation_id), viewer)
    if evaluation is None:
        raise NotFound(f"no evaluation with id {evaluation_id!r}")
    return evaluation


def list_evaluations(*, db: Session, viewer: Principal, model: str | None = None,
                     version: int | None = None, dataset_id: str | None = None,
                     limit: int, offset: int) -> list[Evaluation]:
    """The evaluations `viewer` may see, newest first, optionally of one model (and
    version) or on one dataset."""
    stmt = only_visible(select(Evaluation), Evaluation, viewer)
    if model is not None:
        stmt = stmt.where(Evaluation.model_name == model)
    if version is not None:
        stmt = stmt.where(Evaluation.model_version == version)
    if dataset_id is not None:
        stmt = stmt.where(Evaluation.dataset_id == dataset_id)
    stmt = (stmt.order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
            .limit(limit).offset(offset))
    return list(db.scalars(stmt))


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The API shape (EvaluationOut): the headline figures, then the report's parts."""
    report = evaluation.report or {}
    return {"id": evaluation.id, "model": evaluation.model_name,
            "version": evaluation.model_version, "ref": evaluation.model_ref,
            "dataset_id": evaluation.dataset_id, "dataset_name": evaluation.dataset_name,
            "dataset_sha256": evaluation.dataset_sha256, "labels": evaluation.labels,
            "multi_label": evaluation.multi_label, "n": evaluation.n,
            "skipped_unlabeled": evaluation.skipped_unlabeled,
            "truncated": evaluation.truncated, "accuracy": evaluation.accuracy,
            "macro_f1": evaluation.macro_f1, "micro_f1": evaluation.micro_f1,
            "roc_auc": evaluation.roc_auc, "ece": evaluation.ece,
            **{part: report.get(part) for part in REPORT_PARTS},
            "seconds": evaluation.seconds, "owner": evaluation.owner,
            "created_at": evaluation.created_at}

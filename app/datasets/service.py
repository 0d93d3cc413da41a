"""Dataset storage: rows (parsed and checked by app.datasets.parsing) stored atomically."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import lock_row
from app.core.errors import Conflict, Invalid, NotFound
from app.core.ownership import by_idempotency_key, only_visible, replay, visible
from app.core.security import Principal
from app.core.url_guard import NUL
from app.datasets.parsing import Row, validate_rows
from app.models import FINAL_STATES, Dataset, DatasetRecord, Job
from app.models.base import new_id

INSERT_CHUNK = 1000


def canonical_sha256(rows: list[Row]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps({"text": row.text, "label": row.label}, sort_keys=True,
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def create_dataset(*, db: Session, name: str, rows: list[Row], owner: str,
                   idempotency_key: str | None = None) -> Dataset:
    """Validate and store a dataset owned by `owner` (a key id) in one transaction; honour an
    Idempotency-Key, which is scoped to the owner."""
    validate_rows(rows)
    if NUL in name:
        raise Invalid("name", "NUL characters are not allowed")
    sha = canonical_sha256(rows)
    request_hash = hashlib.sha256(f"{name}\x1f{sha}".encode()).hexdigest()
    if idempotency_key:
        existing = by_idempotency_key(db, Dataset, owner, idempotency_key)
        if existing is not None:
            return replay(existing, request_hash)
    labels: set[str] = set()
    for row in rows:
        if row.label is not None:
            labels.update([row.label] if isinstance(row.label, str) else row.label)
    dataset = Dataset(id=new_id("ds"), name=name, rows=len(rows),
                      labeled_rows=sum(r.label is not None for r in rows), sha256=sha,
                      label_set=sorted(labels), owner=owner, idempotency_key=idempotency_key,
                      request_hash=request_hash)
    db.add(dataset)
    try:
        db.flush()
    except IntegrityError:  # a concurrent request with the same key won the race
        db.rollback()
        existing = by_idempotency_key(db, Dataset, owner, idempotency_key)
        if existing is None:
            raise
        return replay(existing, request_hash)
    for start in range(0, len(rows), INSERT_CHUNK):
        db.execute(insert(DatasetRecord), [
            {"dataset_id": dataset.id, "idx": start + i, "text": r.text, "label": r.label}
            for i, r in enumerate(rows[start:start + INSERT_CHUNK])])
    return dataset


def get_dataset(*, db: Session, dataset_id: str, viewer: Principal) -> Dataset:
    """The dataset if `viewer` may see it; NotFound otherwise (absent or another key's)."""
    dataset = visible(db.get(Dataset, dataset_id), viewer)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return dataset


def list_datasets(*, db: Session, viewer: Principal, limit: int, offset: int) -> list[Dataset]:
    """The datasets `viewer` may see, newest first."""
    stmt = only_visible(select(Dataset), Dataset, viewer)
    stmt = stmt.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)
    return list(db.scalars(stmt))


def read_records(*, db: Session, dataset_id: str) -> list[tuple[str, Any]]:
    """All (text, label) pairs of a dataset, in upload order."""
    stmt = (select(DatasetRecord.text, DatasetRecord.label)
            .where(DatasetRecord.dataset_id == dataset_id).order_by(DatasetRecord.idx))
    return [(t, lab) for t, lab in db.execute(stmt)]


def delete_dataset(*, db: Session, dataset_id: str, viewer: Principal) -> None:
    """Delete a dataset and its rows, unless a job that is not final reads it.

    Taken under the dataset's row lock (`lock_row`), which job submission also takes before
    it inserts a job naming the dataset: a submission either commits first (and this
    refuses) or waits and finds the dataset gone (422 `dataset_not_found`). Final jobs keep
    their spec, which names the deleted id. The caller commits.

    Raises:
        NotFound: absent, or another key's (404, the same answer).
        Conflict: `dataset_in_use` (409); `details.jobs` lists the ids, visible to `viewer`,
            of the jobs that are not final and use it as corpus or eval set.
    """
    dataset = visible(lock_row(db, Dataset, dataset_id), viewer)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    users = jobs_using(db, dataset_id)
    if users:
        shown = [job.id for job in users if viewer.may_see(job.owner)]
        raise Conflict(f"dataset {dataset_id} is used by {len(users)} job(s) that are not "
                       f"final{': ' + ', '.join(shown) if shown else ''}; cancel them or wait "
                       "until they finish", code="dataset_in_use", details={"jobs": shown})
    db.execute(delete(DatasetRecord).where(DatasetRecord.dataset_id == dataset_id))
    db.delete(dataset)


def jobs_using(db: Session, dataset_id: str) -> list[Job]:
    """Jobs that are not final and read `dataset_id` (corpus or eval set), oldest first."""
    # Jobs that are not final are few at any time; reading their specs here keeps one query
    # for both databases instead of two dialects of JSON path syntax.
    stmt = (select(Job).where(Job.state.not_in([s.value for s in FINAL_STATES]))
            .order_by(Job.created_at))
    return [job for job in db.scalars(stmt)
            if dataset_id in (job.spec.get("data", {}).get("dataset_id"),
                              job.spec.get("data", {}).get("eval_dataset_id"))]

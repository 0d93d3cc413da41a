"""Dataset upload: parse JSON / JSONL / CSV, validate every row, store atomically."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.errors import BadRequest, Invalid, NotFound, PayloadTooLarge
from app.core.ownership import only_visible, visible
from app.core.security import Principal
from app.core.url_guard import NUL
from app.datasets.schemas import DatasetCreate
from app.models import Dataset, DatasetRecord
from app.models.base import new_id

MULTI_LABEL_SEP = "|"  # CSV cells hold several labels as "floods|storm"
INSERT_CHUNK = 1000


@dataclass
class Row:
    text: str
    label: str | list[str] | None


def parse_json(body: bytes) -> tuple[str, list[Row]]:
    """Parse a JSON body {"name", "records": [...]} into rows."""
    try:
        payload = DatasetCreate.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise BadRequest(f"malformed JSON: {err['msg']}", code="malformed_json") from exc
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise Invalid(where, err["msg"]) from exc
    return payload.name, [Row(r.text, r.label) for r in payload.records]


def parse_file(data: bytes, filename: str) -> list[Row]:
    """Parse an uploaded JSONL or CSV file (by extension; JSONL when unsure)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{filename or 'upload'} is not valid UTF-8 (byte {exc.start})",
                         code="invalid_encoding") from exc
    if filename.lower().endswith(".csv"):
        return _parse_csv(text)
    return _parse_jsonl(text)


def _parse_jsonl(text: str) -> list[Row]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Invalid(f"line {lineno}", f"not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or "text" not in obj:
            raise Invalid(f"line {lineno}", "each line must be an object with a 'text' field")
        rows.append(Row(obj["text"], obj.get("label")))
    return rows


def _parse_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise Invalid("file", "a CSV upload needs a 'text' column")
    rows = []
    for rec in reader:
        label = (rec.get("label") or "").strip() or None
        if label and MULTI_LABEL_SEP in label:
            rows.append(Row(rec["text"] or "", [x.strip() for x in label.split(MULTI_LABEL_SEP)]))
        else:
            rows.append(Row(rec["text"] or "", label))
    return rows


def validate_rows(rows: list[Row]) -> None:
    """Refuse empty datasets, empty or oversized texts and malformed labels, naming the row."""
    settings = get_settings()
    if not rows:
        raise Invalid("records", "the dataset has no rows", code="empty_dataset")
    if len(rows) > settings.max_dataset_rows:
        raise PayloadTooLarge(f"{len(rows)} rows exceed the limit of {settings.max_dataset_rows}")
    for i, row in enumerate(rows):
        if not isinstance(row.text, str) or not row.text.strip():
            raise Invalid(f"records[{i}].text", "text must be a non-empty string")
        if NUL in row.text:
            raise Invalid(f"records[{i}].text", "NUL characters are not allowed")
        if len(row.text) > settings.max_text_chars:
            raise Invalid(f"records[{i}].text",
                          f"{len(row.text)} characters exceed the limit of "
                          f"{settings.max_text_chars}")
        labels = [row.label] if isinstance(row.label, str) else row.label
        if labels is not None and (not isinstance(labels, list) or not all(
                isinstance(x, str) and x.strip() for x in labels)):
            raise Invalid(f"records[{i}].label", "label must be a non-empty string or list")
        if labels and any(NUL in x for x in labels):
            raise Invalid(f"records[{i}].label", "NUL characters are not allowed")


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
        existing = _by_idempotency_key(db, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)
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
        existing = _by_idempotency_key(db, owner, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, request_hash)
    for start in range(0, len(rows), INSERT_CHUNK):
        db.execute(insert(DatasetRecord), [
            {"dataset_id": dataset.id, "idx": start + i, "text": r.text, "label": r.label}
            for i, r in enumerate(rows[start:start + INSERT_CHUNK])])
    db.commit()
    return dataset


def _by_idempotency_key(db: Session, owner: str, key: str | None) -> Dataset | None:
    return db.scalar(select(Dataset).where(Dataset.owner == owner,
                                           Dataset.idempotency_key == key))


def _replay(existing: Dataset, request_hash: str) -> Dataset:
    if existing.request_hash != request_hash:
        raise Invalid("Idempotency-Key", "this key was used with a different request body",
                      code="idempotency_mismatch")
    return existing


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

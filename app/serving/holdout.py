"""A registered version's held-out texts: the corpus texts its job kept out of training.

The engine splits the cleaned corpus with `worker.distill.engine.split(n, holdout_fraction,
seed)` and never trains on the held-out part; the same call on the same corpus and spec
gives the same texts back. They are read again from the job's stored spec and its corpus
dataset, so a version whose job or corpus was deleted has none (its compiled copy then
serves fp32: int8 is never used unmeasured).
"""

from __future__ import annotations

import logging

from app.core.db import session_scope
from app.datasets.service import read_records
from app.models import Job
from app.registry.service import get_version
from worker.distill.checks import CheckError, check_corpus
from worker.distill.config import ConfigError
from worker.distill.engine import split
from worker.distill.spec import load_config

log = logging.getLogger(__name__)


def heldout_texts(name: str, version: int, limit: int) -> list[str]:
    """Up to `limit` held-out texts of `name:version`, in corpus order; [] when its job,
    spec or corpus is gone (the reason is logged)."""
    with session_scope() as db:
        row = get_version(db=db, name=name, version=version)
        job = db.get(Job, row.job_id) if row.job_id else None
        if job is None:
            log.info("%s: its job is gone, no held-out texts", row.ref)
            return []
        spec = dict(job.spec)
        corpus_id = spec.get("data", {}).get("dataset_id")
        texts = [t for t, _ in read_records(db=db, dataset_id=corpus_id)] if corpus_id else []
    try:
        cfg = load_config(spec)
        corpus = check_corpus(texts)
    except (ConfigError, CheckError) as exc:
        log.info("%s:%d: no held-out texts (%s)", name, version, exc)
        return []
    _, hold = split(len(corpus), cfg.distillation.holdout_fraction, cfg.distillation.seed)
    return [corpus[i] for i in hold[:limit]]

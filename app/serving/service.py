"""Classification: check the request, resolve the model reference, run the pool, shape results."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Invalid, PayloadTooLarge
from app.registry.service import resolve_ref
from app.serving.pool import ModelPool
from app.serving.schemas import ClassifyIn

DEFAULT_MULTI_THRESHOLD = 0.5


def check_request(body: ClassifyIn) -> None:
    """Refuse requests over the limits or with empty texts, naming the field."""
    settings = get_settings()
    if len(body.texts) > settings.max_classify_texts:
        raise PayloadTooLarge(f"texts: {len(body.texts)} texts exceed the limit of "
                              f"{settings.max_classify_texts} per request")
    for i, text in enumerate(body.texts):
        if not text.strip():
            raise Invalid(f"texts[{i}]", "text must not be empty")
        if len(text) > settings.max_text_chars:
            raise Invalid(f"texts[{i}]", f"{len(text)} characters exceed the limit of "
                          f"{settings.max_text_chars}")


def classify(pool: ModelPool, body: ClassifyIn) -> dict[str, Any]:
    """Classify `body.texts` with the referenced model version."""
    check_request(body)
    with session_scope() as db:
        row = resolve_ref(db=db, ref=body.model)
        key, path, files = row.ref, row.artifact_path, dict(row.files)
        name, version = row.model_name, row.version
    served = pool.get(key, path, files)
    pred = pool.predict(served, body.texts)
    results = [_result(p, served.labels, served.multi_label, body.threshold, body.top_k, trunc)
               for p, trunc in zip(pred.probs, pred.truncated, strict=True)]
    return {"model": name, "version": version, "results": results}


def _result(probs: np.ndarray, labels: list[str], multi: bool, threshold: float | None,
            top_k: int | None, truncated: bool) -> dict[str, Any]:
    order = np.argsort(-probs)
    scores = {labels[i]: round(float(probs[i]), 6) for i in order[: top_k or len(labels)]}
    if multi:
        cut = DEFAULT_MULTI_THRESHOLD if threshold is None else threshold
        label: str | list[str] | None = [labels[i] for i in order if probs[i] >= cut]
    else:
        top = int(order[0])
        label = labels[top] if threshold is None or probs[top] >= threshold else None
    return {"label": label, "scores": scores, "truncated": truncated}

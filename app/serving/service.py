"""Classification: check the request, resolve the model reference, queue it, shape results."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyio import to_thread

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Invalid, PayloadTooLarge
from app.ops.metrics import CLASSIFIED
from app.registry.service import resolve_ref
from app.serving.batcher import MicroBatcher
from app.serving.pool import Encoded, ModelPool, Served
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


@dataclass
class Prepared:
    name: str
    version: int
    served: Served  # pinned: whoever holds a Prepared releases it or hands it to the batcher
    encoded: Encoded


def prepare(pool: ModelPool, body: ClassifyIn) -> Prepared:
    """Resolve the reference, load (or find) the version and tokenize the texts."""
    with session_scope() as db:
        row = resolve_ref(db=db, ref=body.model)
        key, path, files = row.ref, row.artifact_path, dict(row.files)
        name, version = row.model_name, row.version
    served = pool.acquire(key, path, files)
    try:
        return Prepared(name, version, served, pool.encode(served, body.texts))
    except BaseException:
        pool.release(served)
        raise


async def classify(pool: ModelPool, batcher: MicroBatcher, body: ClassifyIn) -> dict[str, Any]:
    """Classify `body.texts` with the referenced model version, micro-batched."""
    check_request(body)
    batcher.admit(len(body.texts))  # refuse before any database or tokenizer work
    prepared = await to_thread.run_sync(prepare, pool, body)
    try:
        future = batcher.submit(prepared.served, prepared.encoded.ids)
    except BaseException:
        pool.release(prepared.served)
        raise
    probs = await asyncio.wrap_future(future)
    served = prepared.served
    CLASSIFIED.labels(prepared.name).inc(len(probs))
    results = [_result(p, served.labels, served.multi_label, body.threshold, body.top_k, trunc)
               for p, trunc in zip(probs, prepared.encoded.truncated, strict=True)]
    return {"model": prepared.name, "version": prepared.version, "results": results}


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

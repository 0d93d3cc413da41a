"""Classification: check the request, resolve the model reference, queue it, shape results."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from anyio import to_thread

from app.core.config import get_settings
from app.core.errors import Invalid, PayloadTooLarge
from app.ops.metrics import CLASSIFIED
from app.serving.batcher import MicroBatcher
from app.serving.pool import ModelPool, Served
from app.serving.refs import RefCache, Target
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


def _load(pool: ModelPool, refs: RefCache, ref: str) -> tuple[Target, Served]:
    target = refs.resolve(ref)
    return target, pool.acquire(target.key, target.artifact_path, target.files)


async def classify(pool: ModelPool, batcher: MicroBatcher, refs: RefCache,
                   body: ClassifyIn) -> dict[str, Any]:
    """Classify `body.texts` with the referenced model version, micro-batched.

    The usual request (reference recently resolved, version loaded) never leaves the event
    loop before its texts are queued; the database and model loading run in a thread.
    """
    check_request(body)
    n = len(body.texts)
    batcher.admit(n)  # refuse before any database or model work
    served: Served | None = None
    try:
        target = refs.get(body.model)
        served = pool.pin(target.key) if target is not None else None
        if target is None or served is None:
            target, served = await to_thread.run_sync(_load, pool, refs, body.model)
        future = batcher.submit(served, list(body.texts))
    except BaseException:
        batcher.cancel(n)
        if served is not None:
            pool.release(served)
        raise
    results = await asyncio.wrap_future(future)
    CLASSIFIED.labels(target.name).inc(n)
    shaped = [_result(p, served.labels, served.multi_label, body.threshold, body.top_k, cut)
              for p, cut in results]
    return {"model": target.name, "version": target.version, "results": shaped}


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

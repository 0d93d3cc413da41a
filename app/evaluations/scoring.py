"""Score a dataset's texts with one version through /classify's own path.

Every chunk goes through `app.serving.service.classify` (checks, tokenizing, the shared
micro-batcher, the same calibrated and rounded scores), so an evaluation reports exactly
what /classify answers for the same texts. Chunks are sent one after another, each at most
one batch: /classify requests that arrive meanwhile join the next forward pass instead of
waiting behind the whole dataset, and the serving queue's bounds hold for both.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from app.core.config import get_settings
from app.core.errors import Invalid, InvalidText, Overloaded
from app.serving import service as serving
from app.serving.batcher import MicroBatcher
from app.serving.pool import ModelPool
from app.serving.refs import RefCache
from app.serving.schemas import ClassifyIn

# While the serving queue is full, an evaluation waits for room rather than failing the
# rows it has already scored; past this long it gives up with the queue's 429.
QUEUE_PATIENCE_S = 30.0
QUEUE_RETRY_S = 0.2


async def score(pool: ModelPool, batcher: MicroBatcher, refs: RefCache, ref: str,
                labels: list[str], texts: list[str], rows: list[int]
                ) -> tuple[np.ndarray, int]:
    """Calibrated scores of `texts` by version `ref` ("name:3"), as /classify gives them.

    Args:
        labels: the version's labels: the columns of the result, in this order.
        rows: the dataset row index of each text, to name a text that cannot be scored.

    Returns:
        (`[N, K]` probabilities, the number of texts cut to the version's max_length).

    Raises:
        Invalid / InvalidText: a text the model cannot read, naming `records[row]`.
        Overloaded: the serving queue stayed full for QUEUE_PATIENCE_S.
        and whatever /classify raises for `ref` (404, 409, 503).
    """
    settings = get_settings()
    size = max(1, min(settings.serving_max_batch, settings.max_classify_texts))
    probs = np.zeros((len(texts), len(labels)))
    truncated = 0
    for start in range(0, len(texts), size):
        body = ClassifyIn(model=ref, texts=texts[start:start + size])
        try:
            answer = await _classify_when_room(pool, batcher, refs, body)
        except Invalid as exc:
            raise _naming_row(exc, rows, start) from exc
        for i, result in enumerate(answer["results"]):
            probs[start + i] = [result["scores"][label] for label in labels]
            truncated += bool(result["truncated"])
    return probs, truncated


async def _classify_when_room(pool: ModelPool, batcher: MicroBatcher, refs: RefCache,
                              body: ClassifyIn) -> dict[str, Any]:
    deadline = time.monotonic() + QUEUE_PATIENCE_S
    while True:
        try:
            return await serving.classify(pool, batcher, refs, body)
        except Overloaded:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(QUEUE_RETRY_S)


def _naming_row(exc: Invalid, rows: list[int], start: int) -> Invalid:
    """The same refusal, naming the dataset row instead of the chunk's `texts[i]`."""
    if not exc.field.startswith("texts["):
        return exc
    row = rows[start + int(exc.field[len("texts["):-1])]
    where = f"records[{row}]"
    message = exc.message.removeprefix(f"{exc.field}: ")
    if isinstance(exc, InvalidText):
        return InvalidText(where, message, reason=exc.details["reason"])
    return Invalid(where, message, code=exc.code)

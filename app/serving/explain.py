"""Why this label: per-token attributions to the label /classify chose (`"explain": true`).

Integrated gradients (Sundararajan et al. 2017, captum's `IntegratedGradients`) over the
student's input word embeddings: the path runs from a baseline where every text token is
the pad token ([CLS] and [SEP] kept) to the text, and each token's attribution is the sum
over the hidden dimension of its embedding's attribution. Positive values support the
label; all attributions together come to about score(text) - score(baseline), where score
is the label's calibrated probability. This is the same computation as captum's
`LayerIntegratedGradients` on the word-embedding layer, but it feeds `inputs_embeds`
instead of hooking the shared encoder's embedding module: a hook there would also reach
the micro-batcher's forwards of other requests running at the same moment.

Explanations never enter the micro-batch: they run after the request's own batched
result, in a thread, one request at a time (a bounded number may wait; past it, 429).
Each forward takes the base's lock like a batch does, so other requests wait at most one
forward (one text x `steps` rows), never a whole explanation.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from anyio import CapacityLimiter, to_thread
from peft import PeftModel

from app.core.errors import Overloaded, Unavailable
from app.serving.pool import ModelPool, Served
from worker.distill.student import mean_pool

log = logging.getLogger(__name__)
METHOD = "integrated_gradients"


def chosen_label(probs: np.ndarray) -> int:
    """Index of the label to explain: the top-scoring one (single-label: the label /classify
    returns, or would return without a threshold; multi-label: the most likely label)."""
    return int(np.argmax(probs))


def explain_text(pool: ModelPool, served: Served, text: str, label: int,
                 steps: int) -> dict[str, Any]:
    """Attributions of `text`'s tokens to label index `label` of the pinned `served`.

    Args:
        text: one validated text (cut to the version's max_length like /classify cuts it).
        label: index into `served.labels`.
        steps: integration steps (rows of the one forward pass per text).

    Returns:
        `{"label": str, "method": "integrated_gradients", "convergence_delta": float,
        "tokens": [{"token": str, "start": int, "end": int, "attribution": float}]}`:
        text tokens only (no [CLS]/[SEP]), in order; `start`/`end` are character offsets
        into `text` from the tokenizer's offset mapping (`text[start:end]` is the token).
    """
    from captum.attr import IntegratedGradients  # heavy (imports matplotlib): on first use

    base = pool.bases[served.base_key]
    encoding = base.tokenizer_for(served.max_length).encode(text)
    ids = torch.tensor([encoding.ids])
    special = torch.tensor([encoding.special_tokens_mask], dtype=torch.bool)
    # A held version has its adapter attached, so the shared encoder is a PeftModel.
    encoder = base.encoder
    assert isinstance(encoder, PeftModel), "explain needs the version's adapter attached"
    embed = encoder.get_input_embeddings()
    with torch.no_grad():
        inputs = embed(ids)
        baseline = embed(torch.where(special, ids, torch.full_like(ids, base.pad_id)))

    def score(embeds: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        with base.lock:  # the micro-batcher's forwards and adapter changes take it too
            out = encoder(inputs_embeds=embeds, attention_mask=mask,
                          adapter_names=[served.key] * embeds.shape[0])
        return served.calibrated(mean_pool(out.last_hidden_state, mask))[:, label]

    attributions, delta = IntegratedGradients(score).attribute(
        inputs, baselines=baseline, n_steps=steps, internal_batch_size=steps,
        return_convergence_delta=True)
    per_token = attributions.sum(-1)[0].detach().numpy()
    tokens = [{"token": token, "start": start, "end": end,
               "attribution": round(float(value), 6)}
              for token, (start, end), value, is_special in zip(
                  encoding.tokens, encoding.offsets, per_token, encoding.special_tokens_mask,
                  strict=True) if not is_special]
    return {"label": served.labels[label], "method": METHOD,
            "convergence_delta": round(float(delta.abs().max()), 6), "tokens": tokens}


class Explainer:
    """Runs explanations off the event loop, one request at a time, with a bounded wait.

    Args:
        pool: the loaded versions.
        steps: integration steps per text.
        max_waiting: explanation requests admitted at once (running or waiting); one more
            is refused with 429 rather than queued without bound.
    """

    def __init__(self, pool: ModelPool, *, steps: int, max_waiting: int) -> None:
        self.pool, self.steps, self.max_waiting = pool, steps, max_waiting
        self._limiter = CapacityLimiter(1)  # one at a time: each takes all the cores it gets
        self._admitted = 0
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Reserve a place, or raise Overloaded (429) at once; every admit is followed by
        one `explain` or `cancel`."""
        with self._lock:
            if self._admitted >= self.max_waiting:
                raise Overloaded(f"{self._admitted} explanation requests are running or "
                                 "waiting; retry shortly, or classify without explain",
                                 retry_after=2)
            self._admitted += 1

    def cancel(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def explain(self, served: Served, texts: list[str],
                      probs: list[np.ndarray]) -> list[dict[str, Any]]:
        """One explanation per text, for its top label (call after `admit`; `cancel` after).

        Raises:
            Unavailable: `explanation_failed` (503) when the attribution raises; the
                request fails alone, the batch and other requests never see it.
        """
        return await to_thread.run_sync(self._explain_all, served, texts, probs,
                                        limiter=self._limiter)

    def _explain_all(self, served: Served, texts: list[str],
                     probs: list[np.ndarray]) -> list[dict[str, Any]]:
        try:
            return [explain_text(self.pool, served, text, chosen_label(p), self.steps)
                    for text, p in zip(texts, probs, strict=True)]
        except Exception as exc:
            log.exception("explanation for %s failed", served.key)
            raise Unavailable(f"the explanation failed ({type(exc).__name__}); the "
                              "classification alone works without explain",
                              code="explanation_failed") from exc

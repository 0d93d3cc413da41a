"""Teacher annotation through the cache: score texts under prompts, only what is missing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.distill.cache import TeacherCache
from worker.distill.prompts import Prompt
from worker.distill.teacher import HFTeacher, TeacherScores


@dataclass
class AnnotationStats:
    """What annotation cost: texts scored fresh vs. served from the cache, and seconds."""

    scored: int = 0
    cached: int = 0
    seconds: float = 0.0
    per_prompt: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        rate = self.scored / self.seconds if self.seconds else None
        return {"texts_scored": self.scored, "texts_cached": self.cached,
                "seconds": round(self.seconds, 3),
                "texts_per_second": round(rate, 2) if rate else None}


def annotate(teacher: HFTeacher, prompt: Prompt, texts: Sequence[str], *,
             cache: TeacherCache | None, batch_size: int, max_text_tokens: int,
             prefix_cache: bool = True, want_hidden: bool = True,
             stats: AnnotationStats | None = None,
             on_texts: Callable[[int], None] | None = None) -> TeacherScores:
    """Return the teacher's scores for every text, scoring only cache misses."""
    stats = stats if stats is not None else AnnotationStats()
    n = len(texts)
    logprobs = np.zeros((n, len(prompt.options)), dtype=np.float32)
    hidden = np.zeros((n, teacher.hidden_size), dtype=np.float32) if want_hidden else None
    hits = cache.get(teacher.id, prompt.id, texts) if cache else {}
    missing = []
    for i in range(n):
        hit = hits.get(i)
        if hit is None or (want_hidden and hit[1] is None):
            missing.append(i)
            continue
        logprobs[i] = hit[0]
        if hidden is not None and hit[1] is not None:
            hidden[i] = hit[1]
    stats.cached += n - len(missing)
    if on_texts and n - len(missing):
        on_texts(n - len(missing))
    if missing:
        todo = [texts[i] for i in missing]
        started = time.perf_counter()
        fresh = teacher.score(prompt, todo, batch_size=batch_size, max_text_tokens=max_text_tokens,
                              prefix_cache=prefix_cache, want_hidden=want_hidden,
                              on_batch=on_texts)
        elapsed = time.perf_counter() - started
        stats.seconds += elapsed
        stats.scored += len(todo)
        entry = stats.per_prompt.setdefault(prompt.name, {"texts": 0, "seconds": 0.0})
        entry["texts"] += len(todo)
        entry["seconds"] += elapsed
        logprobs[missing] = fresh.logprobs
        if hidden is not None and fresh.hidden is not None:
            hidden[missing] = fresh.hidden
        if cache:
            cache.put(teacher.id, prompt.id, todo, fresh.logprobs, fresh.hidden)
    return TeacherScores(logprobs, hidden)


def option_probs(scores: TeacherScores) -> np.ndarray:
    """Renormalise option log-probs into a distribution over the options ([N, K])."""
    lp = scores.logprobs - scores.logprobs.max(axis=1, keepdims=True)
    p = np.exp(lp)
    return p / p.sum(axis=1, keepdims=True)

"""Teacher annotation through the cache: score texts under prompts, only what is missing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.distill.cache import TeacherCache
from worker.distill.calibration import softmax
from worker.distill.prompts import Prompt
from worker.distill.teachers import Teacher, TeacherScores

CACHE_CHUNK = 256  # texts scored between cache writes


@dataclass
class AnnotationStats:
    """What annotation cost: texts scored fresh vs. served from the cache, and seconds.

    Teacher passes (one text read by the teacher under one prompt: what one teacher-cache
    entry holds; a channel prompt reads the text once per label within its pass) are
    counted twice: `passes_requested` counts each distinct (prompt, text) the run asked
    for once, cache hits included (a repeat within the run is no pass: the cache answers
    it even when cold), so it is what the strategy costs on a cold cache; `passes_computed`
    counts the passes the teacher actually ran. `stage` names what passes are for (probe,
    label, reprompt, refine, latency); `per_stage` splits both counts by it.
    """

    scored: int = 0
    cached: int = 0
    seconds: float = 0.0
    per_prompt: dict[str, dict[str, float]] = field(default_factory=dict)
    passes_requested: int = 0
    passes_computed: int = 0
    stage: str = "label"
    per_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def count(self, prompt_ids: Sequence[str], texts: Sequence[str], computed: int) -> None:
        """Add the passes of texts[i] under prompt_ids[i] (new ones only) and `computed`
        fresh passes to the totals and to the current `stage`."""
        fresh = {key for key in zip(prompt_ids, texts, strict=True) if key not in self.seen}
        self.seen |= fresh
        self.passes_requested += len(fresh)
        self.passes_computed += computed
        entry = self.per_stage.setdefault(self.stage, {"requested": 0, "computed": 0})
        entry["requested"] += len(fresh)
        entry["computed"] += computed

    def to_dict(self) -> dict[str, object]:
        rate = self.scored / self.seconds if self.seconds else None
        return {"texts_scored": self.scored, "texts_cached": self.cached,
                "seconds": round(self.seconds, 3),
                "texts_per_second": round(rate, 2) if rate else None,
                "teacher_passes_requested": self.passes_requested,
                "teacher_passes_computed": self.passes_computed,
                "passes_by_stage": {k: dict(v) for k, v in self.per_stage.items()}}


def annotate(teacher: Teacher, prompt: Prompt, texts: Sequence[str], *,
             cache: TeacherCache | None, batch_size: int, max_text_tokens: int,
             prefix_cache: bool = True, want_hidden: bool = True,
             stats: AnnotationStats | None = None,
             on_texts: Callable[[int], None] | None = None) -> TeacherScores:
    """Return the teacher's scores for every text, scoring only cache misses."""
    stats = stats if stats is not None else AnnotationStats()
    want_hidden = want_hidden and teacher.hidden_size > 0  # black-box teachers have none
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
    stats.count([prompt.id] * n, texts, len(missing))
    if on_texts and n - len(missing):
        on_texts(n - len(missing))
    # Score in chunks and store each in the cache at once: a killed worker loses one chunk.
    # A sharded teacher (worker/distill/shards.py) stores each shard itself: one chunk.
    chunk = max(1, len(missing)) if getattr(teacher, "stores_shards", False) else CACHE_CHUNK
    for start in range(0, len(missing), chunk):
        part = missing[start:start + chunk]
        todo = [texts[i] for i in part]
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
        logprobs[part] = fresh.logprobs
        if hidden is not None and fresh.hidden is not None:
            hidden[part] = fresh.hidden
        if cache:
            cache.put(teacher.id, prompt.id, todo, fresh.logprobs, fresh.hidden)
    return TeacherScores(logprobs, hidden)


def annotate_each(teacher: Teacher, prompts: Sequence[Prompt], texts: Sequence[str], *,
                  cache: TeacherCache | None, batch_size: int, max_text_tokens: int,
                  stats: AnnotationStats | None = None,
                  on_texts: Callable[[int], None] | None = None) -> np.ndarray:
    """Log-probs [N, K] of text i under prompts[i], scoring only cache misses."""
    stats = stats if stats is not None else AnnotationStats()
    out = np.zeros((len(texts), len(prompts[0].options)), dtype=np.float32) if prompts else \
        np.zeros((0, 0), dtype=np.float32)
    missing = []
    for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        hit = cache.get(teacher.id, prompt.id, [text]).get(0) if cache else None
        if hit is None:
            missing.append(i)
        else:
            out[i] = hit[0]
    stats.cached += len(texts) - len(missing)
    stats.count([p.id for p in prompts], texts, len(missing))
    if missing:
        started = time.perf_counter()
        fresh = teacher.score_each([prompts[i] for i in missing], [texts[i] for i in missing],
                                   batch_size=batch_size, max_text_tokens=max_text_tokens,
                                   on_batch=on_texts)
        stats.seconds += time.perf_counter() - started
        stats.scored += len(missing)
        out[missing] = fresh.logprobs
        if cache:
            for row, i in enumerate(missing):
                cache.put(teacher.id, prompts[i].id, [texts[i]], fresh.logprobs[row:row + 1], None)
    return out


def option_probs(scores: TeacherScores) -> np.ndarray:
    """Renormalise option log-probs into a distribution over the options ([N, K])."""
    return softmax(scores.logprobs)

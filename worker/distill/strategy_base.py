"""The strategy interface: what a strategy is given (`Context`) and returns (`Annotation`).

A strategy does two things: `annotate` turns texts into one soft label per text (and a
teacher hidden state), and `schedule` turns those into training phases. The strategies
themselves are registered by name in worker/distill/strategies.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from worker.distill.annotate import AnnotationStats, annotate, option_probs
from worker.distill.cache import TeacherCache
from worker.distill.config import EngineConfig
from worker.distill.labelers import EmbeddingLabeler
from worker.distill.phases import Phase
from worker.distill.prompts import Prompt
from worker.distill.teachers import Teacher, TeacherScores


@dataclass
class Context:
    """What a strategy may use: config, the teacher (loaded on first use), the cache, an
    optional embedding labeler, and a progress counter of teacher calls."""

    cfg: EngineConfig
    load_teacher: Callable[[], Teacher]
    cache: TeacherCache | None
    on_texts: Callable[[int], None]
    load_embedder: Callable[[], EmbeddingLabeler] | None = None
    stats: AnnotationStats = field(default_factory=AnnotationStats)
    _teacher: Teacher | None = None
    _embedder: EmbeddingLabeler | None = None

    @property
    def multi_label(self) -> bool:
        return self.cfg.task.multi_label

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:
            self._teacher = self.load_teacher()
        return self._teacher

    @property
    def embedder(self) -> EmbeddingLabeler | None:
        if self._embedder is None and self.load_embedder is not None:
            self._embedder = self.load_embedder()
        return self._embedder

    def probs(self, prompt: Prompt, texts: list[str]) -> np.ndarray:
        """Option probabilities [N, K] of `texts` under `prompt`, through the cache."""
        return option_probs(self.scores(prompt, texts))

    def release(self) -> None:
        """Drop the loaded models (the teacher alone can take gigabytes)."""
        self._teacher = None
        self._embedder = None

    def scores(self, prompt: Prompt, texts: list[str], want_hidden: bool = False
               ) -> TeacherScores:
        """Teacher scores of `texts` under `prompt`, through the cache."""
        t = self.cfg.teacher
        return annotate(self.teacher, prompt, texts, cache=self.cache, batch_size=t.batch_size,
                        max_text_tokens=t.max_text_tokens, prefix_cache=t.prefix_cache,
                        want_hidden=want_hidden, stats=self.stats, on_texts=self.on_texts)


@dataclass
class Annotation:
    """The teacher's view of every text.

    Args:
        probs: [N, L] soft labels (a distribution for single-label, per-label P for multi).
        hidden: [N, H] teacher representations, or None.
        record: what was decided (prompts, weights, calibration), for metrics and lineage.
        extra: other per-text arrays a strategy needs later (embeddings, re-asked mask).
    """

    probs: np.ndarray
    hidden: np.ndarray | None
    record: dict[str, Any]
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class Strategy(Protocol):
    """A recipe by name: how the teacher is asked, and how the student is trained on that."""

    name: str
    self_trains: bool  # whether the trained student joins the label model for more rounds

    def annotate(self, ctx: Context, texts: list[str], n_corpus: int) -> Annotation: ...

    def schedule(self, cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray) -> list[Phase]:
        ...

    def expected_teacher_calls(self, cfg: EngineConfig, n_texts: int) -> int: ...

    def refine(self, ctx: Context, ann: Annotation, train_idx: np.ndarray,
               student_probs: np.ndarray, texts: list[str], seed: int
               ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]: ...

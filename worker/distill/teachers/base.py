"""What the engine asks of a teacher, whichever model or server answers.

Every teacher scores texts under a prompt: per text, one score per option of the prompt
(log-probabilities for question prompts, text likelihoods for channel prompts), and, when it
is a white box, a pooled hidden state. Strategies, the annotation cache and the engine use
only what `Teacher` declares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.distill.prompts import Prompt


class TeacherError(Exception):
    """The teacher cannot do what the task asks; `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class TeacherScores:
    """Raw teacher outputs for one prompt, in the order of the texts given.

    Args:
        logprobs: [N, K] log-probability of each option's tokens as the next token.
        hidden: [N, H] mean of the last hidden layer over the text's positions, or None.
    """

    logprobs: np.ndarray
    hidden: np.ndarray | None


class Teacher(Protocol):
    """A teacher as the engine uses it.

    Attributes:
        hidden_size: width H of the pooled hidden states; 0 for a black box (no states).
        total_params: parameter count, for the cost figures (0 when unknown).
    """

    hidden_size: int
    total_params: int

    @property
    def precision(self) -> str:
        """"float32" or "bfloat16": what a local teacher computes in (a shard worker loads
        the same); "float32" for a black box, whose server decides."""
        ...

    @property
    def id(self) -> str:
        """Stable identity for the teacher cache: the same model answers the same."""
        ...

    def score(self, prompt: Prompt, texts: Sequence[str], *, batch_size: int = 16,
              max_text_tokens: int = 256, prefix_cache: bool = True, want_hidden: bool = True,
              on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Scores [N, K] of `texts` under `prompt`; `on_batch(n)` after each batch of n.

        Raises:
            TeacherError: the prompt or its options cannot be scored by this teacher.
        """
        ...

    def score_each(self, prompts: Sequence[Prompt], texts: Sequence[str], *,
                   batch_size: int = 8, max_text_tokens: int = 256,
                   on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Scores [N, K] of text i under prompts[i] (all prompts offer the same options)."""
        ...

    def option_ids(self, options: Sequence[str]) -> list[list[int]]:
        """Token ids that count as each option.

        Raises:
            TeacherError: two options cannot be told apart, or one cannot be expressed.
        """
        ...

    def latency_ms(self, prompt: Prompt, texts: Sequence[str], batch_size: int = 32) -> float:
        """Wall milliseconds per text for one uncached batch (what serving the teacher costs)."""
        ...

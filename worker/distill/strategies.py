"""Strategies by name: the registry the engine and the API read, and the baselines.

A strategy (interface: worker/distill/strategy_base.py) turns texts into soft labels and
those into training phases. `adaptive` (worker/distill/adaptive.py) is the default; the
baselines live here beside it so comparisons run through the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worker.distill.adaptive import Adaptive
from worker.distill.annotate import option_probs
from worker.distill.config import ConfigError, EngineConfig
from worker.distill.phases import Phase
from worker.distill.prompts import Prompt, default_prompts
from worker.distill.strategy_base import Annotation, Context, Strategy

__all__ = ["STRATEGIES", "Annotation", "Context", "Strategy", "get_strategy"]


def labels_from_prompts(ctx: Context, prompts: list[Prompt], texts: list[str],
                        want_hidden: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Soft labels from the fixed prompts: one over labels, or yes-probability per label."""
    if not ctx.multi_label:
        scores = ctx.scores(prompts[0], texts, want_hidden)
        return option_probs(scores), scores.hidden
    columns, hidden = [], None
    for i, prompt in enumerate(prompts):
        scores = ctx.scores(prompt, texts, want_hidden and i == 0)
        columns.append(option_probs(scores)[:, 0])
        hidden = scores.hidden if i == 0 else hidden
    return np.stack(columns, axis=1), hidden


class VanillaKD:
    """One fixed prompt, soft labels, one training phase, no representations."""

    name = "vanilla_kd"
    self_trains = False
    loss_single, loss_multi = "soft_ce", "soft_bce"

    def annotate(self, ctx: Context, texts: list[str], n_corpus: int) -> Annotation:
        prompts = default_prompts(ctx.cfg.task)
        probs, _ = labels_from_prompts(ctx, prompts, texts, want_hidden=False)
        record = {"prompts": [{"name": p.name, "id": p.id, "template": p.template,
                               "weight": 1.0, "label": p.label} for p in prompts],
                  "calibration": None, "reprompted": 0}
        return Annotation(probs, None, record)

    def schedule(self, cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray) -> list[Phase]:
        d = cfg.distillation
        loss = self.loss_multi if cfg.task.multi_label else self.loss_single
        return [Phase("train", train_idx, d.epochs, loss, (d.temperature, d.temperature))]

    def expected_teacher_calls(self, cfg: EngineConfig, n_texts: int) -> int:
        return n_texts * (len(cfg.task.labels) if cfg.task.multi_label else 1)

    def refine(self, ctx: Context, ann: Annotation, train_idx: np.ndarray,
               student_probs: np.ndarray, texts: list[str], seed: int
               ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Never called: this schedule has no refine phase."""
        raise NotImplementedError(f"{self.name} schedules no refine phase")


class PseudoLabel(VanillaKD):
    """Fine-tune on the teacher's hard labels (its top choice), the classic self-training."""

    name = "pseudo_label"
    loss_single, loss_multi = "hard_ce", "hard_bce"


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    s.name: s for s in (Adaptive, VanillaKD, PseudoLabel)}


def get_strategy(name: str) -> Strategy:
    """A fresh strategy object for `name`.

    Raises:
        ConfigError: `distillation.strategy` names no registered strategy.
    """
    if name not in STRATEGIES:
        raise ConfigError("distillation.strategy", f"must be one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]()

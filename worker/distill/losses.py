"""Distillation losses, registered by name so strategies and ablations can pick them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]
LOSSES: dict[str, LossFn] = {}
# The losses between projected student and teacher representations: the names a job spec's
# `distillation.align_loss` may take.
ALIGN_LOSSES: dict[str, LossFn] = {}


def register(name: str, *, align: bool = False) -> Callable[[LossFn], LossFn]:
    """Register a loss under `name`; `align=True` for a representation-alignment loss."""
    def wrap(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        if align:
            ALIGN_LOSSES[name] = fn
        return fn
    return wrap


def _weighted_mean(per_item: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_item.mean()
    return (per_item * weights).sum() / weights.sum().clamp(min=1e-8)


@register("soft_ce")
def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, temperature: float = 1.0,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against teacher probabilities, both softened by `temperature`.

    Scaled by T^2 so gradients keep their size as T changes (Hinton et al., 2015).
    """
    t = temperature
    soft_target = F.softmax(torch.log(target.clamp(min=1e-8)) / t, dim=-1)
    per_item = -(soft_target * F.log_softmax(logits / t, dim=-1)).sum(-1)
    return _weighted_mean(per_item, weights) * t * t


@register("soft_bce")
def soft_binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *,
                              temperature: float = 1.0,
                              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-label binary cross-entropy against teacher probabilities (multi-label tasks)."""
    t = temperature
    soft_target = torch.sigmoid(torch.logit(target.clamp(1e-6, 1 - 1e-6)) / t)
    per_item = F.binary_cross_entropy_with_logits(logits / t, soft_target,
                                                  reduction="none").mean(-1)
    return _weighted_mean(per_item, weights) * t * t


@register("hard_ce")
def hard_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, temperature: float = 1.0,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against the teacher's top label only (pseudo-label fine-tuning)."""
    per_item = F.cross_entropy(logits, target.argmax(-1), reduction="none")
    return _weighted_mean(per_item, weights)


@register("hard_bce")
def hard_binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *,
                              temperature: float = 1.0,
                              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy against thresholded teacher labels (multi-label pseudo-labels)."""
    per_item = F.binary_cross_entropy_with_logits(logits, (target > 0.5).float(),
                                                  reduction="none").mean(-1)
    return _weighted_mean(per_item, weights)


@register("contrastive", align=True)
def contrastive_alignment(student: torch.Tensor, teacher: torch.Tensor, *,
                          tau: float = 0.1) -> torch.Tensor:
    """InfoNCE over the batch: each projected student vector must pick its own teacher vector."""
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    logits = s @ t.T / tau
    labels = torch.arange(len(s), device=s.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@register("mse", align=True)
def mse_alignment(student: torch.Tensor, teacher: torch.Tensor, *,
                  tau: float = 0.1) -> torch.Tensor:
    """Mean squared error between L2-normalised projected student and teacher vectors."""
    return F.mse_loss(F.normalize(student, dim=-1), F.normalize(teacher, dim=-1))

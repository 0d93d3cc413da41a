"""Logits -> temperature -> probabilities, and the label-free fits that set them.

One place for the step every consumer of a student shares (the trainer's evaluation,
serving, the benchmarks): `probabilities` divides logits by the version's temperature and
applies softmax over labels (single-label) or a sigmoid per label (multi-label). The fits:
`fit_temperature` (the temperature, on the held-out split against the teacher's soft
labels), `match_decisions` (the decision offsets folded into a student's head) and
`match_prior` (class-balance matching of an annotator, used by the judge). Prompt
calibration on content-free inputs is part of judging prompts: worker/distill/label_model.py.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

EPS = 1e-9
MIN_PRIOR = 0.02  # no class is estimated rarer than this (a mixture may empty a component)
TEMPERATURE_GRID = (0.25, 8.0, 60)  # fit_temperature's log-spaced grid: low, high, points

Logits = TypeVar("Logits", np.ndarray, torch.Tensor)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of [N, K] scores (shifted by the row maximum first)."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Elementwise logistic function."""
    return 1 / (1 + np.exp(-z))


def probabilities(logits: Logits, temperature: float, multi_label: bool) -> Logits:
    """Calibrated probabilities [N, K] from logits [N, K]: sigmoid per label (multi-label) or
    softmax over labels, at `temperature`. NumPy in, NumPy out; a tensor stays a tensor (in
    float32, on its device), so serving calibrates without leaving the accelerator."""
    if isinstance(logits, torch.Tensor):
        z = logits.float() / temperature
        return torch.sigmoid(z) if multi_label else torch.softmax(z, -1)
    z = logits / temperature
    return sigmoid(z) if multi_label else softmax(z)


def fit_temperature(logits: np.ndarray, target: np.ndarray, multi_label: bool) -> float:
    """Scalar temperature that best matches softmax(logits / T) to `target` (log-spaced grid).

    Fit on the held-out split against the teacher's soft labels, so no gold labels are needed.
    """
    low, high, points = TEMPERATURE_GRID
    best_t, best_loss = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(low), np.log(high), points)):
        z = logits / t
        if multi_label:
            p = sigmoid(z)
            loss = -(target * np.log(p + EPS) + (1 - target) * np.log(1 - p + EPS)).mean()
        else:
            z = z - z.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
            loss = -(target * logp).sum(1).mean()
        if loss < best_loss:
            best_t, best_loss = float(t), float(loss)
    return best_t


def match_decisions(logits: np.ndarray, teacher_probs: np.ndarray, multi_label: bool,
                    iterations: int = 200) -> np.ndarray:
    """Logit offsets [K] that make the student decide each label as often as the teacher does.

    A student fit to soft labels on imbalanced data drifts towards the majority class; this
    label-free prior matching moves its decision boundary back to the teacher's rates.
    """
    if multi_label:
        bias = np.zeros(logits.shape[1])
        for j in range(logits.shape[1]):
            rate = float((teacher_probs[:, j] >= 0.5).mean())
            if 0 < rate < 1:  # the offset that puts that share of texts above zero
                bias[j] = -float(np.quantile(logits[:, j], 1 - rate))
        return bias
    k = logits.shape[1]
    target = np.bincount(teacher_probs.argmax(1), minlength=k) / len(teacher_probs)
    target = np.clip(target, 1e-3, None)
    bias = np.zeros(k)
    for _ in range(iterations):
        current = np.bincount((logits + bias).argmax(1), minlength=k) / len(logits)
        step = 0.05 * (np.log(target) - np.log(np.clip(current, 1e-3, None)))
        if np.abs(current - target).max() < 0.5 / len(logits):
            break
        bias += step
    return bias - bias.mean()


def centred_log_probs(probs: np.ndarray) -> np.ndarray:
    """Centred log-probabilities [N, K]: every row sums to 0."""
    logp = np.log(np.clip(probs, EPS, 1.0))
    return logp - logp.mean(1, keepdims=True)


def match_prior(probs: np.ndarray, prior: np.ndarray, ref: np.ndarray,
                iterations: int = 100) -> np.ndarray:
    """Shift the annotator's per-class scores so that its mean answer over `ref` rows equals
    `prior` [K] (class-balance matching, Saerens et al., 2002); returns the matched
    distribution [N, K]."""
    s = centred_log_probs(probs)
    offset = np.zeros(s.shape[1])
    target = np.clip(prior, MIN_PRIOR, None)
    target = target / target.sum()
    for _ in range(iterations):
        q = softmax(s[ref] + offset).mean(0)
        step = np.log(target / np.clip(q, EPS, None))
        offset += step
        if np.abs(step).max() < 1e-4:
            break
    return softmax(s + offset)

"""Metrics: agreement, accuracy, macro-F1, per-class P/R/F1, confusion, ECE, ROC-AUC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15  # the usual choice (Guo et al., 2017)


def predictions(probs: np.ndarray, multi_label: bool, threshold: float = 0.5) -> np.ndarray:
    """Top label index per row, or a 0/1 matrix for multi-label tasks."""
    return (probs >= threshold).astype(int) if multi_label else probs.argmax(1)


def agreement(student: np.ndarray, teacher: np.ndarray, multi_label: bool) -> float:
    """Share of texts where student and teacher decide the same (no gold labels needed)."""
    if len(student) == 0:
        return float("nan")
    s, t = predictions(student, multi_label), predictions(teacher, multi_label)
    same = (s == t).all(1) if multi_label else (s == t)
    return float(same.mean())


def expected_calibration_error(probs: np.ndarray, correct: np.ndarray) -> float:
    """ECE of the top-label confidence against whether it was right."""
    conf = probs.max(1) if probs.ndim == 2 else probs
    edges = np.linspace(0, 1, ECE_BINS + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(conf[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve via ranks (ties averaged); None when a class is absent."""
    pos, neg = positive.sum(), (~positive).sum()
    if pos == 0 or neg == 0:
        return None
    order = scores.argsort()
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def classification_report(probs: np.ndarray, gold: Sequence[str | list[str]],
                          labels: list[str], multi_label: bool) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix, ECE (and ROC-AUC if binary)."""
    index = {name: i for i, name in enumerate(labels)}
    n = len(gold)
    if multi_label:
        truth = np.zeros((n, len(labels)), dtype=int)
        for row, names in enumerate(gold):
            for name in ([names] if isinstance(names, str) else names):
                truth[row, index[name]] = 1
        pred = predictions(probs, True)
        per_class = {}
        for j, name in enumerate(labels):
            tp = float(((pred[:, j] == 1) & (truth[:, j] == 1)).sum())
            fp = float(((pred[:, j] == 1) & (truth[:, j] == 0)).sum())
            fn = float(((pred[:, j] == 0) & (truth[:, j] == 1)).sum())
            p, r, f = _prf(tp, fp, fn)
            per_class[name] = {"precision": p, "recall": r, "f1": f,
                               "support": int(truth[:, j].sum())}
        correct = (pred == truth).astype(float)
        return {
            "n": n,
            "accuracy": float((pred == truth).all(1).mean()),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
            "per_class": per_class,
            "ece": expected_calibration_error(
                np.where(pred == 1, probs, 1 - probs).ravel(), correct.ravel()),
        }
    truth_idx = np.array([index[g if isinstance(g, str) else g[0]] for g in gold])
    pred_idx = probs.argmax(1)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth_idx, pred_idx, strict=True):
        confusion[t, p] += 1
    per_class = {}
    for j, name in enumerate(labels):
        tp = float(confusion[j, j])
        p, r, f = _prf(tp, float(confusion[:, j].sum() - tp), float(confusion[j, :].sum() - tp))
        per_class[name] = {"precision": p, "recall": r, "f1": f,
                           "support": int(confusion[j, :].sum())}
    report: dict[str, Any] = {
        "n": n,
        "accuracy": float((pred_idx == truth_idx).mean()) if n else float("nan"),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": confusion.tolist()},
        "ece": expected_calibration_error(probs, (pred_idx == truth_idx).astype(float)),
    }
    if len(labels) == 2:
        report["roc_auc"] = roc_auc(probs[:, 0], truth_idx == 0)
    return report


def fit_temperature(logits: np.ndarray, target: np.ndarray, multi_label: bool) -> float:
    """Scalar temperature that best matches softmax(logits / T) to `target` (log-spaced grid).

    Fit on the held-out split against the teacher's soft labels, so no gold labels are needed.
    """
    best_t, best_loss = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 60)):
        z = logits / t
        if multi_label:
            p = 1 / (1 + np.exp(-z))
            loss = -(target * np.log(p + 1e-9) + (1 - target) * np.log(1 - p + 1e-9)).mean()
        else:
            z = z - z.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
            loss = -(target * logp).sum(1).mean()
        if loss < best_loss:
            best_t, best_loss = float(t), float(loss)
    return best_t

"""Gold-label and agreement metrics on probability matrices: accuracy, macro- and micro-F1,
per-class P/R/F1, confusion, ECE, ROC-AUC, reliability bins, majority baseline.

Pure numpy: the engine's evaluate phase (worker.distill.evaluate) and the API's stored
evaluations (app.evaluations) both score with these, so the two never disagree.
"""

from __future__ import annotations

from collections import Counter
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


def dominant_decision(probs: np.ndarray, labels: list[str], multi_label: bool
                      ) -> dict[str, Any]:
    """The most common decision over the rows of `probs` [N, K] and its share.

    Returns `{"decision": label | [labels], "share": 0..1, "texts": N}`; for multi-label
    tasks a decision is the whole set of labels above 0.5 (possibly empty).
    """
    if len(probs) == 0:
        return {"decision": None, "share": 0.0, "texts": 0}
    decisions = predictions(probs, multi_label)
    if multi_label:
        rows, counts = np.unique(decisions, axis=0, return_counts=True)
        top = rows[counts.argmax()]
        decision: str | list[str] = [labels[j] for j in np.flatnonzero(top)]
    else:
        counts = np.bincount(decisions, minlength=len(labels))
        decision = labels[int(counts.argmax())]
    return {"decision": decision, "share": float(counts.max() / len(probs)),
            "texts": int(len(probs))}


def majority_baseline(gold: Sequence[str | list[str]], labels: list[str],
                      multi_label: bool) -> dict[str, Any]:
    """Accuracy and macro-F1 of always answering the most common gold answer (for
    multi-label, the most common label set); the floor a classifier must beat."""
    keys = [tuple(sorted([g] if isinstance(g, str) else g)) if multi_label
            else (g if isinstance(g, str) else g[0]) for g in gold]
    counts = Counter(keys)
    # Ties go to the first in sorted order, so the baseline never depends on row order.
    top = min(counts, key=lambda k: (-counts[k], k))
    index = {name: i for i, name in enumerate(labels)}
    constant = np.zeros((len(gold), len(labels)))
    for name in top if isinstance(top, tuple) else (top,):  # a label set, or one label
        constant[:, index[name]] = 1.0
    report = classification_report(constant, gold, labels, multi_label, baseline=False)
    return {"decision": list(top) if multi_label else top,
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def classification_report(probs: np.ndarray, gold: Sequence[str | list[str]],
                          labels: list[str], multi_label: bool, baseline: bool = True
                          ) -> dict[str, Any]:
    """Score `probs` [N, K] (calibrated probabilities, columns in `labels` order) against
    `gold` (N label names, or lists of names for multi-label tasks; all must be in `labels`).

    Returns `{"n", "accuracy", "macro_f1", "per_class": {label: {"precision", "recall",
    "f1", "support"}}, "ece"}`; single-label also `"confusion": {"labels", "matrix"}` (rows
    are gold, columns predicted), `"reliability"` and, with two labels, `"roc_auc"` (of the
    first label; None when a class is absent); multi-label also `"micro_f1"` (a label counts
    as predicted at probability >= 0.5, accuracy is exact set match). With `baseline`, also
    `majority`: what always answering the commonest gold answer scores."""
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
        # Micro-F1 pools every (text, label) decision: frequent labels weigh more than in
        # the macro average, which treats a rare hazard like a common one.
        _, _, micro_f1 = _prf(float(((pred == 1) & (truth == 1)).sum()),
                              float(((pred == 1) & (truth == 0)).sum()),
                              float(((pred == 0) & (truth == 1)).sum()))
        multi_report: dict[str, Any] = {
            "n": n,
            "accuracy": float((pred == truth).all(1).mean()),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
            "micro_f1": micro_f1,
            "per_class": per_class,
            "ece": expected_calibration_error(
                np.where(pred == 1, probs, 1 - probs).ravel(), correct.ravel()),
        }
        if baseline and n:
            multi_report["majority"] = majority_baseline(gold, labels, True)
        return multi_report
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
        "reliability": reliability(probs, truth_idx),
    }
    if len(labels) == 2:
        report["roc_auc"] = roc_auc(probs[:, 0], truth_idx == 0)
    if baseline and n:
        report["majority"] = majority_baseline(gold, labels, False)
    return report


def label_distribution(probs: np.ndarray, labels: list[str], multi: bool) -> dict[str, float]:
    """Share of texts assigned to each label."""
    if multi:
        return {name: float((probs[:, j] >= 0.5).mean()) for j, name in enumerate(labels)}
    counts = np.bincount(probs.argmax(1), minlength=len(labels)) / max(1, len(probs))
    return {name: float(c) for name, c in zip(labels, counts, strict=True)}


def reliability(probs: np.ndarray, gold_idx: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Reliability-diagram data for single-label predictions: per confidence bin, the mean
    confidence, the accuracy and the count."""
    conf = probs.max(1)
    correct = probs.argmax(1) == gold_idx
    edges = np.linspace(0, 1, bins + 1)
    out: dict[str, list] = {"edges": [round(float(e), 3) for e in edges], "confidence": [],
                            "accuracy": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        out["count"].append(int(sel.sum()))
        out["confidence"].append(float(conf[sel].mean()) if sel.any() else None)
        out["accuracy"].append(float(correct[sel].mean()) if sel.any() else None)
    return out

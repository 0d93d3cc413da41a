"""Metrics: agreement, accuracy, macro-F1, per-class P/R/F1, confusion, ECE, ROC-AUC."""

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
    if multi_label:
        for name in top:
            constant[:, index[name]] = 1.0
    else:
        constant[:, index[top]] = 1.0
    report = classification_report(constant, gold, labels, multi_label, baseline=False)
    return {"decision": list(top) if multi_label else top,
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def classification_report(probs: np.ndarray, gold: Sequence[str | list[str]],
                          labels: list[str], multi_label: bool, baseline: bool = True
                          ) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix, ECE (and ROC-AUC if binary);
    with `baseline`, also `majority`: what always answering the commonest gold answer scores."""
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
        multi_report: dict[str, Any] = {
            "n": n,
            "accuracy": float((pred == truth).all(1).mean()),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
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


def evaluate_run(cfg: Any, student: Any, tokenizer: Any, ann: Any, corpus: list[str],
                 eval_texts: list[str], eval_labels: list[str | list[str]],
                 hold_idx: np.ndarray, device: Any, train_meta: dict[str, Any]
                 ) -> dict[str, Any]:
    """Teacher and student side by side: held-out agreement, gold-label reports, latency."""
    from worker.distill.phases import encode, predict_logits
    from worker.distill.trainer import probabilities

    multi, labels = cfg.task.multi_label, cfg.task.label_names
    temperature, bs = train_meta["temperature"], cfg.distillation.batch_size
    enc_corpus = encode(tokenizer, corpus, cfg.student.max_length)
    hold_probs = probabilities(predict_logits(student, enc_corpus, hold_idx, bs, device),
                               temperature, multi)
    metrics: dict[str, Any] = {
        "corpus": {"texts": len(corpus), "train": len(corpus) - len(hold_idx),
                   "holdout": len(hold_idx), "truncated": int(enc_corpus.truncated.sum())},
        "teacher": {"label_distribution": label_distribution(ann.probs[: len(corpus)], labels,
                                                             multi),
                    "dominant_decision": dominant_decision(ann.probs[: len(corpus)], labels,
                                                           multi)},
        "student": {
            "holdout_agreement": agreement(hold_probs, ann.probs[hold_idx], multi),
            "temperature": temperature,
            "decision_bias": train_meta.get("decision_bias"),
            "trainable_params": train_meta["trainable_params"],
            "total_params": train_meta["total_params"],
            "train_seconds": train_meta["train_seconds"],
        },
    }
    latency_enc = enc_corpus
    if eval_texts:
        enc_eval = encode(tokenizer, eval_texts, cfg.student.max_length)
        student_probs = probabilities(
            predict_logits(student, enc_eval, np.arange(len(eval_texts)), bs, device),
            temperature, multi)
        teacher_probs = ann.probs[len(corpus):]
        metrics["teacher"]["eval"] = classification_report(teacher_probs, eval_labels, labels,
                                                           multi)
        metrics["student"]["eval"] = classification_report(student_probs, eval_labels, labels,
                                                           multi)
        metrics["student"]["eval_agreement"] = agreement(student_probs, teacher_probs, multi)
        latency_enc = enc_eval
        seen = np.concatenate([hold_probs, student_probs])
    else:
        seen = hold_probs
    # Every text the student answered here: enough to see it give one answer to all of them.
    metrics["student"]["dominant_decision"] = dominant_decision(seen, labels, multi)
    metrics["student"]["ms_per_text"] = round(student_latency_ms(student, latency_enc, device), 3)
    metrics["student"]["latency_batch"] = LATENCY_BATCH
    return metrics


LATENCY_BATCH = 32  # per-text latency is measured on one batch of this size


def student_latency_ms(student: Any, enc: Any, device: Any) -> float:
    """Wall milliseconds per text for one batch of LATENCY_BATCH texts (after a warm-up)."""
    import time

    from worker.distill.phases import predict_logits

    idx = np.arange(min(LATENCY_BATCH, len(enc)))
    predict_logits(student, enc, idx, LATENCY_BATCH, device)
    started = time.perf_counter()
    predict_logits(student, enc, idx, LATENCY_BATCH, device)
    return 1000 * (time.perf_counter() - started) / max(1, len(idx))


def match_decisions(logits: np.ndarray, teacher_probs: np.ndarray, multi_label: bool,
                    iterations: int = 200) -> np.ndarray:
    """Logit offsets that make the student decide each label as often as the teacher does.

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

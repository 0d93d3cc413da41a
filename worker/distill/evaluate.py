"""The engine's evaluate phase: held-out agreement, gold-label reports for teacher and
student, latency; and the label-free calibration the trainer fits (temperature, decision
offsets). The metrics themselves live in worker.distill.metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.distill.metrics import (
    agreement,
    classification_report,
    dominant_decision,
    label_distribution,
)


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

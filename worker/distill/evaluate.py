"""The engine's evaluate phase: held-out agreement, gold-label reports for teacher and
student, latency. The metrics themselves live in worker.distill.metrics; the temperature and
decision offsets the trainer fits, in worker.distill.calibration."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from worker.distill.calibration import probabilities
from worker.distill.config import EngineConfig
from worker.distill.metrics import (
    agreement,
    classification_report,
    dominant_decision,
    label_distribution,
)
from worker.distill.phases import Encoded, encode, predict_logits
from worker.distill.strategy_base import Annotation
from worker.distill.student import Student


def evaluate_run(cfg: EngineConfig, student: Student, tokenizer: PreTrainedTokenizerBase,
                 ann: Annotation, corpus: list[str], eval_texts: list[str],
                 eval_labels: list[str | list[str]], hold_idx: np.ndarray,
                 device: torch.device, train_meta: dict[str, Any]) -> dict[str, Any]:
    """Teacher and student side by side: held-out agreement, gold-label reports, latency."""
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


def student_latency_ms(student: Student, enc: Encoded, device: torch.device) -> float:
    """Wall milliseconds per text for one batch of LATENCY_BATCH texts (after a warm-up)."""
    idx = np.arange(min(LATENCY_BATCH, len(enc)))
    predict_logits(student, enc, idx, LATENCY_BATCH, device)
    started = time.perf_counter()
    predict_logits(student, enc, idx, LATENCY_BATCH, device)
    return 1000 * (time.perf_counter() - started) / max(1, len(idx))

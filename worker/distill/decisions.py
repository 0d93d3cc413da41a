"""Per-job decisions, without labels, on the two mechanisms that pay only sometimes.

*Representations* (aligning the student with the teacher's hidden states): they pay when the
teacher's states carry more about the task than the student's own embeddings already do.
Measured as the cross-validated accuracy of a linear probe (scikit-learn's logistic
regression) predicting the judge's confident labels, once from the teacher's states and once
from the student base's embeddings (the probing view of Alain & Bengio, 2017).

*The easy phase* (a curriculum on the most confident texts first, Bengio et al., 2009): it
pays when the labels are noisy overall but the confident texts are markedly cleaner than
the rest. Measured as how often the annotators agree with the judge's decision, on the
confident share and on the others: the curriculum is used when the confident share agrees
EASY_GAIN more often *and* the agreement over all texts is below CLEAN (when most labels
already agree, a start on half the texts only delays training on texts that are fine; the
previous benchmark showed exactly that split: phases cost 2 points on the binary task and
gained 6 on the six-class one). With one annotator (nothing to compare) the judge's own
confidence stands in for agreement.

The easy share, and the confident texts the probe learns, are chosen per class
(`easy_share`): the most confident fraction of the texts the judge puts in each class, not of
all texts. One global cut favours the class the judge is surest about: on the binary
benchmark task it left the minority class out of the easy share entirely in two seeds of
three. With the per-class share, phases no longer cost the binary task anything (0.625 with
them vs 0.621 without, 3 seeds; bench/results/quality.md). FlexMatch (Zhang et al., 2021,
"curriculum pseudo labeling") makes the same observation about global confidence thresholds
and moves to per-class ones.

Each decision returns its evidence, recorded in the job's metrics and lineage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROBE_MARGIN = 0.02  # the teacher's states must beat the student's embeddings by this much
CONFIDENT_SHARE = 0.5  # the probe learns the judge's most confident half
EASY_GAIN = 0.15  # the confident share must agree this much more often to pay
CLEAN = 0.75  # ... and the agreement over all texts must be below this


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    counts = np.bincount(labels)
    folds = min(5, int(counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=splitter).mean())


def representations_pay(hidden: np.ndarray | None, embeddings: np.ndarray | None,
                        targets: np.ndarray, rows: np.ndarray, confidence: np.ndarray,
                        seed: int) -> tuple[bool, dict[str, Any]]:
    """Whether the teacher's hidden states [N, Ht] predict the judge's confident labels
    better than the student's embeddings [N, Hs] do, on `rows` (the training texts).

    `targets` [N, K] are single-label distributions (multi-label callers pass the most
    likely label's column set as a distribution); `confidence` [N] in 0..1. The confident
    texts are chosen per class (`easy_share`), so a minority class is not left out of them.
    """
    if hidden is None:
        return False, {"reason": "the teacher gives no hidden states"}
    if embeddings is None:
        return True, {"reason": "no student embeddings to compare with: kept on"}
    sure = easy_share(rows, targets, confidence, CONFIDENT_SHARE)
    labels = targets[sure].argmax(1)
    teacher = _probe_accuracy(hidden[sure], labels, seed)
    student = _probe_accuracy(embeddings[sure], labels, seed)
    if np.isnan(teacher) or np.isnan(student):
        return False, {"reason": "too few confident texts per label to probe"}
    pays = teacher >= student + PROBE_MARGIN
    return pays, {"teacher_probe_accuracy": round(teacher, 4),
                  "student_probe_accuracy": round(student, 4), "texts": int(len(sure)),
                  "margin": PROBE_MARGIN}


def easy_share(rows: np.ndarray, posterior: np.ndarray, confidence: np.ndarray,
               fraction: float, multi_label: bool = False) -> np.ndarray:
    """The easy phase's texts: indices into the corpus, a subset of `rows`.

    Single-label: per class of the judge's decision (`posterior` [N, K] argmax), the
    `fraction` most confident of the `rows` in that class (at least one text per class the
    judge uses), so the share keeps the judge's class balance. Multi-label: the `fraction`
    most confident of `rows` overall (a text holds several labels; there is no one class to
    stratify by). `confidence` [N] in 0..1. Returned sorted ascending.
    """
    rows = np.asarray(rows)
    if len(rows) == 0:
        return rows
    if multi_label:
        cut = np.quantile(confidence[rows], 1 - fraction)
        return np.sort(rows[confidence[rows] >= cut])
    decided = posterior[rows].argmax(1)
    chosen = []
    for k in np.unique(decided):
        members = rows[decided == k]
        keep = max(1, int(round(fraction * len(members))))
        order = np.argsort(-confidence[members], kind="stable")
        chosen.append(members[order[:keep]])
    return np.sort(np.concatenate(chosen))


def easy_phase_pays(posterior: np.ndarray, annotators: Sequence[np.ndarray],
                    rows: np.ndarray, confidence: np.ndarray, easy_fraction: float,
                    multi_label: bool = False) -> tuple[bool, dict[str, Any]]:
    """Whether the labels are noisy (annotators [N, K] agree with the judge's decision on
    fewer than CLEAN of `rows`) and the easy share (`easy_share`, its `easy_fraction`)
    markedly cleaner than the rest (at least EASY_GAIN more agreement)."""
    easy = easy_share(rows, posterior, confidence, easy_fraction, multi_label)
    rest = np.setdiff1d(rows, easy)
    if len(easy) == 0 or len(rest) == 0 or np.ptp(confidence[rows]) == 0:
        return False, {"reason": "no confidence spread: every text is as confident"}
    if annotators:
        decided = posterior.argmax(1)
        on_easy = np.mean([(a[easy].argmax(1) == decided[easy]).mean() for a in annotators])
        on_rest = np.mean([(a[rest].argmax(1) == decided[rest]).mean() for a in annotators])
        basis = "annotator agreement with the judge"
    else:
        on_easy, on_rest = confidence[easy].mean(), confidence[rest].mean()
        basis = "judge confidence"
    gain = float(on_easy - on_rest)
    overall = float((on_easy * len(easy) + on_rest * len(rest)) / len(rows))
    return gain >= EASY_GAIN and overall < CLEAN, {
        "basis": basis, "easy_texts": int(len(easy)), "easy": round(float(on_easy), 4),
        "rest": round(float(on_rest), 4),
        "gain": round(gain, 4), "overall": round(overall, 4), "gain_threshold": EASY_GAIN,
        "clean_threshold": CLEAN}

"""The student corrects its teacher: self-training rounds through the label model.

A student trained on the judge's soft labels often beats them: it sees every text through
one encoder and smooths labels that the teacher's prompts got wrong one by one. Each round
(Lee, 2013; Xie et al., 2020, "Noisy Student"; here with the student as one more annotator
of a label model, as in Karamanolakis et al., 2021, "ASTRA"):

1. the student's answers on the corpus join the label model as one more annotator. They are
   cross-fitted: a logistic head on the student's own pooled embeddings, fitted on the other
   folds, answers for each text, so no text is labelled by a head that saw its target. Its
   skill is estimated by the label model like every other annotator's, never assumed;
2. the judge refits; its posterior becomes the new targets; the student trains on them;
3. the round is kept only if the new student agrees at least as well as the previous one
   with the judge fitted *without* the student (teacher prompts and labelers alone). Under
   independent errors that agreement grows with how well the student separates the true
   classes (worker/distill/judge.py), so a round that drifts towards the student's own
   mistakes lowers it and is discarded: weights and targets go back to the previous round.
   "Lowers" is judged against the measurement's own noise: a round is discarded when the
   agreement falls by more than the standard error of the change, from a paired bootstrap
   over the corpus texts (`agreement_change`; Efron & Tibshirani, 1993). On a few hundred
   texts a change of a few texts' ranks is within that noise, and a fixed tolerance would be
   right for one corpus size only.

The loop stops after `distillation.self_training_rounds`, when a round is discarded, or
when fewer than MIN_CHANGE of the corpus changes its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from worker.distill import judge as jd

FOLDS = 5
MIN_CHANGE = 0.01  # a round that moves fewer labels than this has converged
BOOTSTRAP = 200  # paired resamples of the corpus for the standard error of an agreement change
HEAD_C = 1.0  # inverse L2 strength of the cross-fitted logistic head (scikit-learn default)


@dataclass
class Groups:
    """The label model's annotators per question (one group for single-label, one per label
    for multi-label), as the adaptive strategy left them in the annotation."""

    annotators: list[list[jd.Annotator]]
    models: list[str]
    multi_label: bool

    @classmethod
    def from_annotation(cls, record: dict[str, Any], extra: dict[str, np.ndarray],
                        multi_label: bool, rows: int) -> Groups | None:
        """The first `rows` rows (the corpus) of every annotator; None when the strategy
        recorded no annotators (the baselines)."""
        names = record.get("annotators")
        if not names:
            return None
        groups = [[jd.Annotator(a["name"], a["source"],
                                np.asarray(extra[f"annotator.{g}.{i}"][:rows], dtype=np.float64),
                                a.get("informs_prior", True))
                   for i, a in enumerate(group)] for g, group in enumerate(names)]
        models = [j.get("chosen", "gaussian") for j in record.get("judge", [])]
        return cls(groups, models or ["gaussian"] * len(groups), multi_label)


def cross_fitted(pooled: np.ndarray, targets: np.ndarray, ref: np.ndarray,
                 seed: int) -> np.ndarray:
    """Out-of-fold probabilities [N, K] of a logistic head on `pooled` [N, H] fitted to the
    targets' argmax over `ref` rows; rows outside `ref` get a head fitted on all of `ref`.
    Classes are weighted to balance (a rare class is not drowned; the judge matches every
    annotator to its prior anyway). A class absent from a fold's training rows gets
    probability 0 there."""
    k = targets.shape[1]
    y = targets.argmax(1)
    out = np.zeros((len(pooled), k))

    def head(rows: np.ndarray, at: np.ndarray) -> np.ndarray:
        classes = np.unique(y[rows])
        probs = np.zeros((len(at), k))
        if len(classes) == 1:
            probs[:, classes[0]] = 1.0
            return probs
        model = LogisticRegression(C=HEAD_C, max_iter=1000, class_weight="balanced")
        model.fit(pooled[rows], y[rows])
        probs[:, model.classes_] = model.predict_proba(pooled[at])
        return probs

    counts = np.bincount(y[ref], minlength=k)
    folds = min(FOLDS, max(2, int(counts[counts > 0].min())))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(ref, y[ref]):
        out[ref[test]] = head(ref[train], ref[test])
    rest = np.setdiff1d(np.arange(len(pooled)), ref)
    if len(rest):
        out[rest] = head(ref, rest)
    return out


def student_annotators(pooled: np.ndarray, targets: np.ndarray, ref: np.ndarray,
                       multi_label: bool, seed: int) -> list[np.ndarray]:
    """The student as an annotator of each group: [N, K] for single-label; per label
    [N, 2] (yes, no) for multi-label, from a cross-fitted head per label."""
    if not multi_label:
        return [cross_fitted(pooled, targets, ref, seed)]
    out = []
    for j in range(targets.shape[1]):
        yes = targets[:, j:j + 1]
        out.append(cross_fitted(pooled, np.concatenate([yes, 1 - yes], axis=1), ref, seed))
    return out


def judge_without_student(groups: Groups, ref: np.ndarray, seed: int) -> list[np.ndarray]:
    """Per group, the judge's posterior [N, K] from the other annotators alone: the fixed
    reference every round's student is measured against (fitted once per run)."""
    return [jd.fit(model, annotators, ref, seed).posterior
            for annotators, model in zip(groups.annotators, groups.models, strict=True)]


def independent_agreement(references: list[np.ndarray], student: list[np.ndarray],
                          ref: np.ndarray) -> float:
    """Mean over groups of the rank agreement between the student and the judge fitted on
    the other annotators alone (`judge_without_student`): the round's acceptance criterion."""
    return float(np.mean([jd.agreement(mine, without, ref)
                          for mine, without in zip(student, references, strict=True)]))


def agreement_change(references: list[np.ndarray], old: list[np.ndarray],
                     new: list[np.ndarray], ref: np.ndarray, seed: int
                     ) -> tuple[float, float]:
    """How the independent agreement moves from the `old` student annotators to the `new`
    ones (per group [N, K], as `independent_agreement` takes them): (change, standard error).

    The standard error comes from BOOTSTRAP paired resamples of the `ref` rows: both students
    are scored on the same resampled texts, so what they share cancels out."""
    change = (independent_agreement(references, new, ref)
              - independent_agreement(references, old, ref))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        rows = rng.choice(ref, size=len(ref), replace=True)
        draws.append(independent_agreement(references, new, rows)
                     - independent_agreement(references, old, rows))
    return float(change), float(np.std(draws))


def refreshed_targets(groups: Groups, student: list[np.ndarray], ref: np.ndarray,
                      seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The judge refitted with the student as one more annotator: targets [N, K] (or
    [N, L] yes-probabilities for multi-label) and, per group, the student's estimated
    balanced accuracy next to every other annotator's."""
    columns, record = [], []
    for annotators, model, mine in zip(groups.annotators, groups.models, student,
                                       strict=True):
        with_student = [*annotators, jd.Annotator("student", "student", mine)]
        j = jd.fit(model, with_student, ref, seed)
        columns.append(j.posterior)
        record.append({"label_model": model,
                       "skill": {a.name: round(float(s), 4)
                                 for a, s in zip(with_student, j.skill, strict=True)}})
    if groups.multi_label:
        return np.stack([c[:, 0] for c in columns], axis=1), record
    return columns[0], record


def changed(old: np.ndarray, new: np.ndarray, multi_label: bool) -> float:
    """Share of rows whose decision differs between two target arrays."""
    if multi_label:
        return float(((old >= 0.5) != (new >= 0.5)).any(1).mean())
    return float((old.argmax(1) != new.argmax(1)).mean())

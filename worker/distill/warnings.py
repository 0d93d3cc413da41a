"""Warnings: a run that finished but whose figures should not be trusted as they stand.

DESIGN.md 5.5: degenerate results are never silent. Every check reads only the run's metrics
(and the prompt records the strategy left in them), so the same rules apply to any stored
metrics and are testable on plain dicts. A warning does not fail the job: the version is
registered, and moving an alias onto it needs an explicit `force`.

Stable codes (clients may match on them):
- `teacher_one_class` / `student_one_class`: one decision for nearly all texts;
- `skill_near_chance`: the label-free judge found no prompt clearly better than chance;
- `corpus_too_small`, `holdout_too_small`, `eval_set_too_small`: too few texts to trust;
- `student_below_majority` / `teacher_below_majority`: on the labeled eval set, no better
  than always answering the most common gold answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# A side that gives one decision to at least this share of texts is degenerate: balanced
# tasks never look like this, and even on a skewed crisis feed a detector that flags (or
# clears) 95 % of texts is not separating anything; the one-class teacher was at 100 %.
ONE_CLASS_SHARE = 0.95
# An estimated balanced accuracy less than this above chance cannot be told from chance: on
# the default 96-text probe, the standard error of a proportion near 0.5 is about 0.05.
SKILL_NEAR_CHANCE = 0.05
# Fewer training texts than this and the student mostly memorises its teacher's labels (a
# rule of thumb; the 4-text job of issue 11 "agreed 1.000" on a single held-out text).
MIN_TRAIN_TEXTS = 100
# A share measured on fewer texts than this has a 95 % interval wider than about +-0.18 (at
# p = 0.5, 1.96 * sqrt(0.25 / 30)): held-out agreement and eval figures are then noise.
MIN_MEASURED_TEXTS = 30


@dataclass(frozen=True)
class RunWarning:
    """One warning. `code` is stable; `message` says what was seen, with the figures."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def run_warnings(metrics: dict[str, Any], *, multi_label: bool) -> list[RunWarning]:
    """Every warning the metrics of one run call for, in a stable order.

    Args:
        metrics: the engine's metrics (`corpus`, `teacher`, `student`, optional `prompts`);
            `teacher.dominant_decision` / `student.dominant_decision` are
            `{"decision", "share", "texts"}` as `metrics.dominant_decision` writes them.
        multi_label: whether a decision is a set of labels (chance is then 1/2 per label).
    """
    found: list[RunWarning] = []
    for side, where in (("teacher", "corpus texts"), ("student", "held-out and eval texts")):
        w = one_class(side, (metrics.get(side) or {}).get("dominant_decision"), where)
        if w:
            found.append(w)
    labels = _label_count(metrics)
    w = skill_near_chance(metrics.get("prompts") or [], 2 if multi_label else labels)
    if w:
        found.append(w)
    found += small_splits(metrics)
    for side in ("student", "teacher"):
        w = below_majority(side, (metrics.get(side) or {}).get("eval"))
        if w:
            found.append(w)
    return found


def one_class(side: str, dominant: dict[str, Any] | None, where: str) -> RunWarning | None:
    """`{side}_one_class` when one decision covers at least ONE_CLASS_SHARE of the texts."""
    if not dominant or not dominant.get("texts"):
        return None
    share = float(dominant["share"])
    if share < ONE_CLASS_SHARE:
        return None
    return RunWarning(
        f"{side}_one_class",
        f"the {side} answers {_decision(dominant['decision'])} for {share:.0%} of "
        f"{dominant['texts']} {where} (threshold {ONE_CLASS_SHARE:.0%}): it is not "
        "separating the labels")


def skill_near_chance(prompts: Sequence[dict[str, Any]], options: int) -> RunWarning | None:
    """`skill_near_chance` when, for some question, every kept labeler the label model judged
    is estimated within SKILL_NEAR_CHANCE of chance; strategies that judge nothing (the
    one-prompt baselines) give no estimate and so no warning.

    Args:
        prompts: the strategy's prompt records (`kept`, `estimated_balanced_accuracy`,
            `label`: the multi-label question it answers, or None).
        options: answers per question (the label count, or 2 for a multi-label yes/no).
    """
    best: dict[str | None, float] = {}
    for p in prompts:
        estimate = p.get("estimated_balanced_accuracy")
        if not p.get("kept") or not isinstance(estimate, int | float):
            continue
        chance = 1.0 / options  # as the label model counts it: one vote among `options`
        best[p.get("label")] = max(best.get(p.get("label"), -1.0), float(estimate) - chance)
    weak = {label: skill for label, skill in best.items() if skill < SKILL_NEAR_CHANCE}
    if not weak:
        return None
    parts = [f"{'label ' + repr(label) + ': ' if label else ''}best {skill:+.3f}"
             for label, skill in weak.items()]
    return RunWarning(
        "skill_near_chance",
        "the label model estimates the teacher's kept prompts at chance or barely above "
        f"({'; '.join(parts)} balanced accuracy over chance, threshold "
        f"{SKILL_NEAR_CHANCE:+.2f}): its labels may be noise")


def small_splits(metrics: dict[str, Any]) -> list[RunWarning]:
    """`corpus_too_small`, `holdout_too_small`, `eval_set_too_small` by the text counts."""
    corpus = metrics.get("corpus") or {}
    found = []
    train, holdout = corpus.get("train"), corpus.get("holdout")
    if isinstance(train, int) and train < MIN_TRAIN_TEXTS:
        found.append(RunWarning(
            "corpus_too_small",
            f"the student trained on {train} texts (fewer than {MIN_TRAIN_TEXTS}): it has "
            "seen too few examples to generalise beyond them"))
    if isinstance(holdout, int) and holdout < MIN_MEASURED_TEXTS:
        agreement = (metrics.get("student") or {}).get("holdout_agreement")
        seen = f" agreement {agreement:.3f}" if isinstance(agreement, int | float) else ""
        found.append(RunWarning(
            "holdout_too_small",
            f"the held-out split has {holdout} texts (fewer than {MIN_MEASURED_TEXTS}): its"
            f"{seen or ' agreement'} with the teacher says little"))
    n_eval = ((metrics.get("student") or {}).get("eval") or {}).get("n")
    if isinstance(n_eval, int) and 0 < n_eval < MIN_MEASURED_TEXTS:
        found.append(RunWarning(
            "eval_set_too_small",
            f"the labeled eval set has {n_eval} texts (fewer than {MIN_MEASURED_TEXTS}): "
            "its accuracy and F1 figures are mostly chance"))
    return found


def below_majority(side: str, report: dict[str, Any] | None) -> RunWarning | None:
    """`{side}_below_majority` when the side beats always answering the most common gold
    answer on neither accuracy nor macro-F1 (beating it on macro-F1 alone is a real gain on
    a skewed eval set: it finds the rare class)."""
    if not report or not isinstance(report.get("majority"), dict):
        return None
    majority = report["majority"]
    acc, f1 = report.get("accuracy"), report.get("macro_f1")
    if not isinstance(acc, int | float) or not isinstance(f1, int | float):
        return None
    if acc > majority["accuracy"] or f1 > majority["macro_f1"]:
        return None
    return RunWarning(
        f"{side}_below_majority",
        f"on the labeled eval set the {side} (accuracy {acc:.3f}, macro-F1 {f1:.3f}) is no "
        f"better than always answering {_decision(majority['decision'])} (accuracy "
        f"{majority['accuracy']:.3f}, macro-F1 {majority['macro_f1']:.3f})")


def _decision(decision: Any) -> str:
    if isinstance(decision, list):
        return "{" + ", ".join(repr(d) for d in decision) + "}" if decision else "no label"
    return repr(decision)


def _label_count(metrics: dict[str, Any]) -> int:
    distribution = (metrics.get("teacher") or {}).get("label_distribution") or {}
    return max(2, len(distribution))

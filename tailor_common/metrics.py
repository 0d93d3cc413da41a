"""Teacher vs student, read generically from a job's or a version's metrics.

Pure functions shared by the command line (tailor_cli) and the /ui dashboard (app.ui), so
both show the same figures. The metrics shape grows with the engine: known keys get a
friendly name and an order; any other number the engine adds is shown under its own key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# key -> (display name, which way is better: +1 higher, -1 lower, 0 neither)
KNOWN: dict[str, tuple[str, int]] = {
    "macro_f1": ("macro-F1 (labeled eval)", 1),
    "accuracy": ("accuracy (labeled eval)", 1),
    "roc_auc": ("ROC-AUC (labeled eval)", 1),
    "ece": ("calibration error (ECE)", -1),
    "n": ("eval texts", 0),
    "holdout_agreement": ("agreement with teacher (held-out)", 1),
    "eval_agreement": ("agreement with teacher (eval)", 1),
    "ms_per_text": ("ms per text", -1),
    "total_params": ("parameters", -1),
    "trainable_params": ("trainable parameters", 0),
    "train_seconds": ("training seconds", 0),
    "load_seconds": ("load seconds", 0),
    "temperature": ("calibration temperature", 0),
    "latency_batch": ("batch size for ms per text", 0),
}
SIDES = ("teacher", "student")


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    teacher: float | None
    student: float | None
    better: int

    @property
    def winner(self) -> str | None:
        """'teacher' or 'student' when both sides have the figure and it has a direction."""
        if self.better == 0 or self.teacher is None or self.student is None:
            return None
        if self.teacher == self.student:
            return None
        student_higher = self.student > self.teacher
        return "student" if student_higher == (self.better > 0) else "teacher"


def _numbers(obj: Any) -> dict[str, float]:
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def comparison(metrics: dict[str, Any]) -> list[Row]:
    """Every scalar figure of either side: labeled-eval report first, then cost and agreement."""
    sides = {s: metrics.get(s) or {} for s in SIDES}
    evals = {s: _numbers(sides[s].get("eval")) for s in SIDES}
    tops = {s: _numbers(sides[s]) for s in SIDES}
    rows: list[Row] = []
    for source in (evals, tops):
        keys = list(dict.fromkeys([*source["teacher"], *source["student"]]))
        keys.sort(key=lambda k: list(KNOWN).index(k) if k in KNOWN else len(KNOWN))
        for key in keys:
            name, better = KNOWN.get(key, (key.replace("_", " "), 0))
            rows.append(Row(key, name, source["teacher"].get(key), source["student"].get(key),
                            better))
    return rows


def fmt(value: Any) -> str:
    """A number as people read it: integers grouped, fractions to three places."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}"


def eval_report(metrics: dict[str, Any], side: str) -> dict[str, Any] | None:
    """The labeled-eval report of one side, when the job had an eval set."""
    report = (metrics.get(side) or {}).get("eval")
    return report if isinstance(report, dict) else None

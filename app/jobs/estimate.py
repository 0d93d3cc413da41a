"""Estimates before running (`POST /jobs?dry_run=true`): texts, teacher calls, seconds per phase.

The counts come from the engine's own rules: the strategy's `expected_teacher_calls` (the
figure annotation progress counts against) and the steps of the schedule it would train.
The seconds divide them by rates: measured on this deployment's workers by recently
succeeded jobs with the same teacher (annotation) and student (training, inference), or,
without such jobs, the documented defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.checks import BLACK_BOX_SCHEMES
from app.models import Dataset, Job, JobState
from worker.distill.config import EngineConfig
from worker.distill.evaluate import LATENCY_BATCH
from worker.distill.strategies import Annotation, get_strategy

# Documented defaults, measured on this project's reference machine (x86_64, 2 CPU cores
# shared with other work, no GPU) with the offline default models (DESIGN.md section 6):
# - teacher calls/s: bench/results/quality.json, task `crisis`, row `pseudo_label`:
#   annotation_seconds 375.0 for 900 teacher calls (600 corpus + 300 eval texts, one
#   prompt, batch 16, prefix cache on) = 2.40/s. (The prefix-cache micro-benchmark in the
#   same file, 64 short texts, reached 5.75/s: real texts are longer.)
DEFAULT_TEACHER_CALLS_PER_S = 2.40
# - teacher load: SmolLM2-135M GGUF de-quantized and loaded by HFTeacher, timed twice on the
#   same machine while other work shared its cores (24.7 s and 34.3 s; the lower is nearer
#   a worker with the machine to itself); the student's encoder loads in 0.1 s.
DEFAULT_TEACHER_LOAD_S = 25.0
# - training steps/s: quality.json `crisis` / `vanilla_kd`: train_seconds 37.3 for 48 steps
#   (510 training texts, batch 32, 3 epochs, max_length 128, all-MiniLM-L6-v2 + LoRA r 8).
DEFAULT_STUDENT_STEPS_PER_S = 1.29
# - student inference: quality.json `crisis` / `adaptive`: 11.1 ms per text at batch 32.
DEFAULT_STUDENT_MS_PER_TEXT = 11.1
# How many recent succeeded jobs with the same model measure a rate: recent enough to be
# this worker class, enough to smooth one noisy run.
MEASURED_JOBS = 5
# Succeeded jobs read to find them (newest first): bounds the query on a busy registry.
SCANNED_JOBS = 200
MEASURED = "measured on this worker class"
DOCUMENTED = "documented default"


@dataclass(frozen=True)
class Rate:
    value: float
    basis: str


def estimate_job(db: Session, spec: dict[str, Any], cfg: EngineConfig) -> dict[str, Any]:
    """The estimate for a validated, normalized spec.

    Returns:
        `{"texts": int (corpus + labeled eval texts the teacher reads), "teacher_calls": int,
        "training_steps": int, "phases": {"annotate"|"distill"|"evaluate": {"seconds"}},
        "seconds": float (their sum), "basis": MEASURED when every rate was measured here,
        else DOCUMENTED, "rates": {name: {"value", "basis"}}}`.
    """
    data = spec["data"]
    corpus = _rows(db, data["dataset_id"], labeled=False)
    evals = _rows(db, data["eval_dataset_id"], labeled=True) if data.get("eval_dataset_id") \
        else 0
    texts = corpus + evals
    strategy = get_strategy(cfg.distillation.strategy)
    calls = int(strategy.expected_teacher_calls(cfg, texts))
    white_box = not spec["teacher"]["model"].startswith(BLACK_BOX_SCHEMES)
    steps = training_steps(cfg, corpus, white_box=white_box)
    # A black box ignores teacher.precision: its server's speed is the one measured.
    rates = measured_rates(db, spec["teacher"]["model"], spec["student"]["model"],
                           precision=cfg.teacher.precision if white_box else None)
    ms = rates["student_ms_per_text"].value / 1000
    n_hold = max(1, int(round(corpus * cfg.distillation.holdout_fraction)))
    phases = {
        # load, the counted teacher calls, then one batch timed for the teacher's latency
        "annotate": rates["teacher_load_s"].value
        + (calls + LATENCY_BATCH) / rates["teacher_calls_per_s"].value,
        # training, then one prediction pass over the corpus (decision bias, temperature)
        "distill": steps / rates["student_steps_per_s"].value + corpus * ms,
        # held-out and eval predictions, a warm-up and a timed latency batch
        "evaluate": (n_hold + evals + 2 * LATENCY_BATCH) * ms,
    }
    basis = MEASURED if all(r.basis == MEASURED for r in rates.values()) else DOCUMENTED
    return {
        "texts": texts, "teacher_calls": calls, "training_steps": steps,
        "phases": {name: {"seconds": round(s, 1)} for name, s in phases.items()},
        "seconds": round(sum(phases.values()), 1), "basis": basis,
        "rates": {name: {"value": round(r.value, 3), "basis": r.basis}
                  for name, r in rates.items()},
    }


def training_steps(cfg: EngineConfig, n_corpus: int, white_box: bool) -> int:
    """Steps of the strategy's schedule for a corpus of `n_corpus` texts.

    The schedule is the engine's own (`Strategy.schedule`) run on stand-in soft labels whose
    confidences spread evenly from none to certain, so the easy phase takes its configured
    share. A refine phase is counted at its largest (every training text re-asked).
    """
    d, k = cfg.distillation, len(cfg.task.labels)
    n_hold = max(1, int(round(n_corpus * d.holdout_fraction)))
    train_idx = np.arange(max(0, n_corpus - n_hold))
    certainty = np.linspace(0.0, 1.0, max(1, n_corpus))[:, None]
    if cfg.task.multi_label:
        probs = np.repeat(0.5 + 0.5 * certainty, k, axis=1)
    else:
        probs = np.full((len(certainty), k), 1.0 / k) * (1 - certainty)
        probs[:, 0] += certainty[:, 0]
    hidden = np.zeros((len(probs), 1), dtype=np.float32) if white_box else None
    phases = get_strategy(d.strategy).schedule(cfg, Annotation(probs, hidden, {}), train_idx)
    return int(sum(p.steps(d.batch_size) for p in phases))


def measured_rates(db: Session, teacher: str, student: str, *, precision: str | None = None
                   ) -> dict[str, Rate]:
    """Rates from the last MEASURED_JOBS succeeded jobs with the same teacher in the same
    `precision` (annotation; `same_precision`; None: any) and student (training,
    inference); each rate without such a job is its default.

    Only figures are read (never a job's content), from every key's jobs: the speed of the
    workers is the deployment's, not one key's."""
    stmt = (select(Job.spec, Job.metrics).where(Job.state == JobState.SUCCEEDED)
            .order_by(Job.finished_at.desc()).limit(SCANNED_JOBS))
    rows = db.execute(stmt).all()
    # Stored metrics are JSON of any shape (old jobs, failed parts): _num reads them safely.
    same_teacher: list[Any] = [m for s, m in rows if _model(s, "teacher") == teacher
                               and same_precision(s, m, precision)][:MEASURED_JOBS]
    same_student: list[Any] = [m for s, m in rows
                               if _model(s, "student") == student][:MEASURED_JOBS]
    scored = [(_num(m, "annotation", "texts_scored"), _num(m, "annotation", "seconds"))
              for m in same_teacher]
    loads = [_num(m, "teacher", "load_seconds") for m in same_teacher]
    trained = [(p.get("steps"), p.get("seconds")) for m in same_student
               for name, p in ((m or {}).get("phases") or {}).items()
               if name != "annotate" and isinstance(p, dict)]
    latency = [_num(m, "student", "ms_per_text") for m in same_student]
    return {
        "teacher_calls_per_s": _ratio(scored, DEFAULT_TEACHER_CALLS_PER_S),
        "teacher_load_s": _mean(loads, DEFAULT_TEACHER_LOAD_S),
        "student_steps_per_s": _ratio(trained, DEFAULT_STUDENT_STEPS_PER_S),
        "student_ms_per_text": _mean(latency, DEFAULT_STUDENT_MS_PER_TEXT),
    }


def _rows(db: Session, dataset_id: str, labeled: bool) -> int:
    ds = db.get(Dataset, dataset_id)  # visibility was checked by validate_spec
    if ds is None:
        return 0
    return int(ds.labeled_rows if labeled else ds.rows)


def same_precision(spec: Any, metrics: Any, requested: str | None) -> bool:
    """Whether a finished job's teacher speed tells the speed of one asking `requested` as
    teacher.precision: bfloat16 scored 2.6x the texts/s of float32 (bench/results/teacher.md),
    so one never measures the other. An explicit precision matches the jobs whose teacher
    ran in it (float32 before the setting existed); "auto" matches the jobs that asked
    "auto", resolved on these same workers, and those from before the setting (no
    teacher.precision in their spec; they ran float32): their rate is right where "auto"
    resolves to float32 (a CPU without native bfloat16) and about 2.6x too slow where it
    resolves to bfloat16, until MEASURED_JOBS "auto" jobs have replaced them; None (a black
    box, which ignores the setting) matches every job."""
    if requested is None:
        return True
    teacher = (spec or {}).get("teacher") if isinstance(spec, dict) else None
    asked = teacher.get("precision") if isinstance(teacher, dict) else None
    if requested == "auto":
        return asked in (None, "auto")
    ran = (metrics or {}).get("teacher") if isinstance(metrics, dict) else None
    return (ran.get("precision") if isinstance(ran, dict) else None) in (
        (requested, None) if requested == "float32" else (requested,))


def _model(spec: Any, role: str) -> Any:
    return ((spec or {}).get(role) or {}).get("model")


def _num(metrics: Any, *path: str) -> float | None:
    node = metrics
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    ok = isinstance(node, int | float) and not isinstance(node, bool) and node >= 0
    return float(node) if ok else None


def _ratio(pairs: list[tuple[Any, Any]], default: float) -> Rate:
    """Sum of counts over sum of seconds (a job that scored nothing says nothing)."""
    counted = [(float(n), float(s)) for n, s in pairs
               if isinstance(n, int | float) and isinstance(s, int | float) and n > 0 and s > 0]
    if not counted:
        return Rate(default, DOCUMENTED)
    return Rate(sum(n for n, _ in counted) / sum(s for _, s in counted), MEASURED)


def _mean(values: list[float | None], default: float) -> Rate:
    known = [v for v in values if v is not None]
    return Rate(sum(known) / len(known), MEASURED) if known else Rate(default, DOCUMENTED)

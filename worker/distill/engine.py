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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays

from worker.distill import evaluate as ev
from worker.distill.cache import TeacherCache
from worker.distill.config import ConfigError, EngineConfig
from worker.distill.phases import Encoded, encode, predict_logits, train_phases
from worker.distill.prompts import default_prompts
from worker.distill.sources import ResolvedModel, resolve
from worker.distill.strategies import Annotation, Context, get_strategy
from worker.distill.student import build_student, save_student
from worker.distill.teacher import HFTeacher, pick_device

log = logging.getLogger(__name__)
CODE_VERSION = "0.1.0"
MIN_CORPUS = 4  # below this there is nothing to split into training and held-out texts
LATENCY_BATCH = 32
# Share of the overall progress bar each state takes (annotation dominates on CPU).
PROGRESS = {"annotating": (0.0, 0.6), "distilling": (0.6, 0.9), "evaluating": (0.9, 0.97)}

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


@dataclass
class RunResult:
    student_dir: Path
    files: dict[str, str]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    card: str
    base_model: str
    trainable_params: int = 0
    total_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def clean_corpus(texts: Sequence[str]) -> list[str]:
    """Strip, drop empties and exact duplicates, keep order."""
    seen: set[str] = set()
    out = []
    for text in texts:
        t = text.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def split(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * holdout_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


class Reporter:
    """Maps per-state fractions onto one overall progress and forwards to the callback."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self._last = 0.0

    def __call__(self, state: str, phase: str, fraction: float,
                 metrics: dict[str, Any] | None = None) -> None:
        lo, hi = PROGRESS[state]
        overall = max(self._last, lo + (hi - lo) * min(1.0, max(0.0, fraction)))
        self._last = overall
        if self.callback:
            self.callback(state, phase, round(overall, 4), metrics)


def run(cfg: EngineConfig, data: DistillData, *, workdir: Path, cache_dir: Path,
        progress: ProgressFn | None = None, device: str = "auto",
        defaults: tuple[str, str] | None = None) -> RunResult:
    """Distil a student for `cfg` from `data`; see the module docstring."""
    report = Reporter(progress)
    workdir.mkdir(parents=True, exist_ok=True)
    strategy = get_strategy(cfg.distillation.strategy)
    teacher_uri = cfg.teacher.model or (defaults[0] if defaults else "")
    student_uri = cfg.student.model or (defaults[1] if defaults else "")
    if not teacher_uri or not student_uri:
        raise ConfigError("teacher.model", "no teacher or student model given and no default")
    corpus = clean_corpus(data.corpus)
    if len(corpus) < MIN_CORPUS:
        raise EngineError("empty_corpus",
                          f"the corpus has {len(corpus)} distinct non-empty texts after "
                          f"filtering; at least {MIN_CORPUS} are needed")
    _check_eval(cfg, data)
    eval_texts = [t.strip() or t for t in data.eval_texts]
    torch_device = pick_device(device)

    report("annotating", "fetch", 0.0)
    teacher_src = resolve(teacher_uri, cache_dir / "models")
    student_src = resolve(student_uri, cache_dir / "models")
    report("annotating", "fetch", 0.02)

    key = _digest(cfg.to_dict(), teacher_src.sha256, student_src.sha256, corpus, eval_texts)
    ann, ann_meta = _annotation_phase(cfg, strategy, corpus, eval_texts, teacher_src, workdir,
                                      cache_dir, torch_device, key, report)
    train_idx, hold_idx = split(len(corpus), cfg.distillation.holdout_fraction,
                                cfg.distillation.seed)
    student, tokenizer, train_meta = _distill_phase(
        cfg, strategy, ann, corpus, train_idx, hold_idx, student_src, workdir, torch_device,
        key, report)
    report("evaluating", "evaluate", 0.0)
    metrics = _evaluate(cfg, student, tokenizer, ann, corpus, eval_texts, list(data.eval_labels),
                        hold_idx, torch_device, train_meta)
    metrics["teacher"].update(ann_meta["teacher"])
    metrics["annotation"] = ann_meta["annotation"]
    metrics["prompts"] = ann.record.get("prompts", [])
    metrics["strategy"] = {"name": strategy.name,
                           **{k: v for k, v in ann.record.items() if k != "prompts"}}
    metrics["phases"] = {"annotate": {"seconds": ann_meta["annotation"]["seconds"]},
                         **train_meta["log"]}
    report("evaluating", "evaluate", 1.0, {"student": metrics["student"]})
    lineage = {
        "teacher": {"uri": teacher_uri, "sha256": teacher_src.sha256,
                    "id": ann_meta["teacher_id"]},
        "student_base": {"uri": student_uri, "sha256": student_src.sha256},
        "prompts": metrics["prompts"],
        "data": {"corpus_sha256": _digest(corpus), "corpus_texts": len(corpus),
                 "eval_sha256": (_digest(eval_texts, list(data.eval_labels))
                                 if eval_texts else None)},
        "config": cfg.to_dict(),
        "code_version": CODE_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(torch_device),
    }
    return RunResult(
        student_dir=workdir / "student", files=train_meta["files"], metrics=metrics,
        lineage=lineage, card="", base_model=student_uri,
        trainable_params=train_meta["trainable_params"], total_params=train_meta["total_params"])


def _check_eval(cfg: EngineConfig, data: DistillData) -> None:
    if len(data.eval_texts) != len(data.eval_labels):
        raise ConfigError("data.eval", "eval texts and labels differ in length")
    names = set(cfg.task.label_names)
    for i, gold in enumerate(data.eval_labels):
        for name in [gold] if isinstance(gold, str) else gold:
            if name not in names:
                raise ConfigError("data.eval_dataset_id",
                                  f"row {i} has label {name!r}, which is not a task label")


def _annotation_phase(cfg: EngineConfig, strategy: Any, corpus: list[str],
                      eval_texts: list[str], teacher_src: ResolvedModel, workdir: Path,
                      cache_dir: Path, device: torch.device, key: str,
                      report: Reporter) -> tuple[Annotation, dict[str, Any]]:
    """Annotate corpus + eval texts, or load the checkpoint a previous attempt left."""
    ckpt_arrays, ckpt_meta = workdir / "annotation.safetensors", workdir / "annotation.json"
    if ckpt_meta.exists() and ckpt_arrays.exists():
        meta = json.loads(ckpt_meta.read_text())
        if meta.get("key") == key:
            arrays = load_arrays(str(ckpt_arrays))
            report("annotating", "resume", 1.0)
            return Annotation(arrays["probs"], arrays.get("hidden"), meta["record"]), meta
    texts = corpus + eval_texts
    report("annotating", "load-teacher", 0.03)
    started = time.perf_counter()
    teacher = HFTeacher(teacher_src, device)
    load_seconds = time.perf_counter() - started
    cache = TeacherCache(cache_dir / "teacher.sqlite")
    total_calls = max(1, strategy.expected_teacher_calls(cfg, len(texts)))
    done = [0]

    def on_texts(n: int) -> None:
        done[0] += n
        report("annotating", "annotate", 0.05 + 0.9 * min(1.0, done[0] / total_calls))

    ctx = Context(cfg=cfg, teacher=teacher, cache=cache, on_texts=on_texts)
    try:
        ann = strategy.annotate(ctx, texts, len(corpus))
    finally:
        cache.close()
    probe_prompt = default_prompts(cfg.task)[0]
    latency = teacher.latency_ms(probe_prompt, texts, LATENCY_BATCH)
    meta = {
        "key": key,
        "record": ann.record,
        "teacher_id": teacher.id,
        "annotation": ctx.stats.to_dict(),
        "teacher": {"model": teacher_src.uri, "load_seconds": round(load_seconds, 2),
                    "ms_per_text": round(latency, 3), "total_params": teacher.total_params,
                    "latency_batch": LATENCY_BATCH},
    }
    arrays = {"probs": ann.probs.astype(np.float32)}
    if ann.hidden is not None:
        arrays["hidden"] = ann.hidden.astype(np.float32)
    save_arrays(arrays, str(ckpt_arrays) + ".tmp")
    os.replace(str(ckpt_arrays) + ".tmp", ckpt_arrays)
    _atomic_json(ckpt_meta, meta)  # written last: its presence marks the phase complete
    del teacher
    report("annotating", "annotate", 1.0)
    return ann, meta


def _distill_phase(cfg: EngineConfig, strategy: Any, ann: Annotation, corpus: list[str],
                   train_idx: np.ndarray, hold_idx: np.ndarray, student_src: ResolvedModel,
                   workdir: Path, device: torch.device, key: str, report: Reporter
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """Train (or reload) the student; fit its temperature on the held-out split."""
    from worker.distill.student import Student, attach, head_from, load_base, read_artifact

    n_labels = len(cfg.task.labels)
    out_dir, meta_path = workdir / "student", workdir / "distill.json"
    if meta_path.exists() and out_dir.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            report("distilling", "resume", 1.0)
            artifact = read_artifact(out_dir, meta["files"])
            encoder, tokenizer = load_base(student_src)
            peft_model = attach(encoder, artifact, "default")
            student = Student(peft_model, n_labels)
            student.head = head_from(artifact)
            student.to(device).eval()
            return student, tokenizer, meta
    d = cfg.distillation
    phases = strategy.schedule(cfg, ann, train_idx)
    proj_dim = ann.hidden.shape[1] if ann.hidden is not None and any(
        p.align_weight for p in phases) else None
    student, tokenizer = build_student(student_src, cfg.student, n_labels, proj_dim, d.seed)
    student.to(device)
    enc = encode(tokenizer, corpus, cfg.student.max_length)

    def on_step(phase: str, step: int, total: int, loss: float) -> None:
        report("distilling", phase, step / max(1, total),
               {"loss": round(loss, 5)} if step % 10 == 0 or step == total else None)

    report("distilling", phases[0].name, 0.0)
    targets = ann.probs[: len(corpus)]
    hidden = ann.hidden[: len(corpus)] if ann.hidden is not None else None
    started = time.perf_counter()
    train_log = train_phases(student, enc, targets, hidden, phases, batch_size=d.batch_size,
                             learning_rate=d.learning_rate, seed=d.seed, device=device,
                             on_step=on_step)
    train_seconds = time.perf_counter() - started
    logits = predict_logits(student, enc, hold_idx, d.batch_size, device)
    temperature = ev.fit_temperature(logits, targets[hold_idx], cfg.task.multi_label)
    meta_out = {
        "labels": cfg.task.label_names, "multi_label": cfg.task.multi_label,
        "base_model": student_src.uri, "base_sha256": student_src.sha256,
        "max_length": cfg.student.max_length, "pooling": "mean",
        "adapter": {"type": "lora", "r": cfg.student.adapter.r,
                    "alpha": cfg.student.adapter.lora_alpha,
                    "dropout": cfg.student.adapter.dropout,
                    "target_modules": sorted(
                        student.encoder.peft_config["default"].target_modules)},
        "temperature": temperature,
    }
    files = save_student(student, out_dir, meta_out)
    meta = {"key": key, "files": files, "log": train_log.phases,
            "train_seconds": round(train_seconds, 3), "temperature": temperature,
            "trainable_params": student.trainable_parameters(),
            "total_params": student.total_parameters() - (
                sum(p.numel() for p in student.projector.parameters()) if student.projector else 0)}
    _atomic_json(meta_path, meta)
    report("distilling", phases[-1].name, 1.0)
    return student, tokenizer, meta


def _softmax(logits: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    z = logits / temperature
    if multi_label:
        return 1 / (1 + np.exp(-z))
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _evaluate(cfg: EngineConfig, student: Any, tokenizer: Any, ann: Annotation,
              corpus: list[str], eval_texts: list[str], eval_labels: list[str | list[str]],
              hold_idx: np.ndarray, device: torch.device, train_meta: dict[str, Any]
              ) -> dict[str, Any]:
    """Teacher and student side by side: held-out agreement, gold metrics, latency."""
    multi, labels = cfg.task.multi_label, cfg.task.label_names
    temperature = train_meta["temperature"]
    bs = cfg.distillation.batch_size
    enc_corpus = encode(tokenizer, corpus, cfg.student.max_length)
    hold_probs = _softmax(predict_logits(student, enc_corpus, hold_idx, bs, device),
                          temperature, multi)
    teacher_hold = ann.probs[hold_idx]
    metrics: dict[str, Any] = {
        "corpus": {"texts": len(corpus), "train": len(corpus) - len(hold_idx),
                   "holdout": len(hold_idx), "truncated": int(enc_corpus.truncated.sum())},
        "teacher": {"label_distribution": _distribution(ann.probs[: len(corpus)], labels, multi)},
        "student": {
            "holdout_agreement": ev.agreement(hold_probs, teacher_hold, multi),
            "temperature": temperature,
            "trainable_params": train_meta["trainable_params"],
            "total_params": train_meta["total_params"],
            "train_seconds": train_meta["train_seconds"],
        },
    }
    if eval_texts:
        enc_eval = encode(tokenizer, eval_texts, cfg.student.max_length)
        idx = np.arange(len(eval_texts))
        student_probs = _softmax(predict_logits(student, enc_eval, idx, bs, device),
                                 temperature, multi)
        teacher_probs = ann.probs[len(corpus):]
        metrics["teacher"]["eval"] = ev.classification_report(teacher_probs, eval_labels, labels,
                                                              multi)
        metrics["student"]["eval"] = ev.classification_report(student_probs, eval_labels, labels,
                                                              multi)
        metrics["student"]["eval_agreement"] = ev.agreement(student_probs, teacher_probs, multi)
        latency_enc = enc_eval
    else:
        latency_enc = enc_corpus
    metrics["student"]["ms_per_text"] = round(_student_latency(student, latency_enc, device), 3)
    metrics["student"]["latency_batch"] = LATENCY_BATCH
    return metrics


def _student_latency(student: Any, enc: Encoded, device: torch.device) -> float:
    idx = np.arange(min(LATENCY_BATCH, len(enc)))
    predict_logits(student, enc, idx, LATENCY_BATCH, device)  # warm-up
    started = time.perf_counter()
    predict_logits(student, enc, idx, LATENCY_BATCH, device)
    return 1000 * (time.perf_counter() - started) / max(1, len(idx))


def _distribution(probs: np.ndarray, labels: list[str], multi: bool) -> dict[str, float]:
    if multi:
        return {name: float((probs[:, j] >= 0.5).mean()) for j, name in enumerate(labels)}
    counts = np.bincount(probs.argmax(1), minlength=len(labels)) / max(1, len(probs))
    return {name: float(c) for name, c in zip(labels, counts, strict=True)}

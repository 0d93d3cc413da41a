"""The distilling state: train the student phase by phase, a checkpoint after each phase.

A phase checkpoint holds the trainable weights (adapter, head, projector) and the targets as
they stand, so a run resumed after a crash restarts at the first phase not yet finished.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from worker.distill.adaptive import confidence
from worker.distill.calibration import fit_temperature, match_decisions, probabilities
from worker.distill.config import EngineConfig
from worker.distill.phases import (
    Encoded,
    Phase,
    encode,
    predict_logits,
    predict_pooled,
    train_phases,
)
from worker.distill.self_training import (
    MIN_CHANGE,
    Groups,
    agreement_change,
    changed,
    independent_agreement,
    judge_without_student,
    refreshed_targets,
    student_annotators,
)
from worker.distill.sources import ResolvedModel
from worker.distill.stages import Stage
from worker.distill.strategy_base import Annotation, Context, Strategy
from worker.distill.student import (
    Student,
    attach,
    build_student,
    head_from,
    load_base,
    read_artifact,
    save_student,
)

ReportFn = Callable[..., None]


def atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def _save_phase(path: Path, student: Student, targets: np.ndarray, meta: dict[str, Any]) -> None:
    state = {n: p.detach().cpu().contiguous() for n, p in student.named_parameters()
             if p.requires_grad}
    state["__targets__"] = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    save_file(state, str(path) + ".safetensors.tmp")
    os.replace(str(path) + ".safetensors.tmp", str(path) + ".safetensors")
    atomic_json(Path(str(path) + ".json"), meta)  # written last: marks the phase complete


def _load_phase(path: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    meta_path, arrays = Path(str(path) + ".json"), Path(str(path) + ".safetensors")
    if not (meta_path.exists() and arrays.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    return (load_file(str(arrays)), meta) if meta.get("key") == key else None


def _resume(path: Path, key: str, student: Student
            ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Load a finished phase's (or round's) weights into `student`; return its targets and
    meta, or None when it has not finished under this key."""
    saved = _load_phase(path, key)
    if saved is None:
        return None
    state, meta = saved
    targets = state.pop("__targets__").numpy()
    student.load_state_dict(state, strict=False)
    return targets, meta


def reload_student(cfg: EngineConfig, base: ResolvedModel, out_dir: Path, files: dict[str, str],
                   device: torch.device) -> tuple[Student, Any]:
    """Load a finished student from its saved artifact (checksums verified)."""
    artifact = read_artifact(out_dir, files)
    encoder, tokenizer = load_base(base)
    student = Student(attach(encoder, artifact, "default"), len(cfg.task.labels))
    student.head = head_from(artifact)
    return student.to(device).eval(), tokenizer


def distill(cfg: EngineConfig, strategy: Strategy, ctx: Context, ann: Annotation,
            corpus: list[str], train_idx: np.ndarray, hold_idx: np.ndarray,
            base: ResolvedModel, workdir: Path, device: torch.device, key: str,
            report: ReportFn) -> tuple[Student, Any, dict[str, Any]]:
    """Train (or reload) the student; fit its temperature on the held-out split."""
    out_dir, meta_path = workdir / "student", workdir / "distill.json"
    if meta_path.exists() and out_dir.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            report(Stage.DISTILLING, "resume", 1.0)
            student, tokenizer = reload_student(cfg, base, out_dir, meta["files"], device)
            return student, tokenizer, meta
    d, multi = cfg.distillation, cfg.task.multi_label
    phases = strategy.schedule(cfg, ann, train_idx)
    wants_hidden = ann.hidden is not None and any(p.align_weight for p in phases)
    proj_dim = ann.hidden.shape[1] if wants_hidden and ann.hidden is not None else None
    student, tokenizer = build_student(base, cfg.student, len(cfg.task.labels), proj_dim, d.seed)
    student.to(device)
    enc = encode(tokenizer, corpus, cfg.student.max_length)
    targets = ann.probs[: len(corpus)].copy()
    hidden = ann.hidden[: len(corpus)] if ann.hidden is not None else None
    total = max(1, sum(p.steps(d.batch_size) for p in phases))
    done, logs, started = 0, {}, time.perf_counter()
    for i, phase in enumerate(phases):
        ckpt = workdir / f"phase-{i}-{phase.name}"
        resumed = _resume(ckpt, key, student)
        if resumed is not None:
            targets, meta = resumed
            logs[phase.name] = meta["log"]
            done += phase.steps(d.batch_size)
            report(Stage.DISTILLING, f"{phase.name} (resumed)", done / total)
            continue
        extra: dict[str, Any] = {}
        if phase.refine:
            report(Stage.DISTILLING, phase.name, done / total)
            probs = probabilities(predict_logits(student, enc, train_idx, d.batch_size, device),
                                  1.0, multi)
            ann_now = replace(ann, probs=targets)
            indices, targets, extra = strategy.refine(ctx, ann_now, train_idx, probs, corpus,
                                                      d.seed)
            phase = replace(phase, indices=indices)
        base_done = done

        def on_step(name: str, step: int, steps: int, loss: float, _base: int = base_done) -> None:
            report(Stage.DISTILLING, name, (_base + step) / total,
                   {"loss": round(loss, 5), "phase_progress": round(step / max(1, steps), 4)}
                   if step % 10 == 0 or step == steps else None,
                   count=("distill", _base + step, total, "steps"))

        log = train_phases(student, enc, targets, hidden, [phase], batch_size=d.batch_size,
                           learning_rate=d.learning_rate, seed=d.seed + i, device=device,
                           on_step=on_step)
        logs[phase.name] = {**log.phases[phase.name], **extra}
        done += phase.steps(d.batch_size)
        _save_phase(ckpt, student, targets, {"key": key, "log": logs[phase.name]})
    groups = (Groups.from_annotation(ann.record, ann.extra, multi, len(corpus))
              if d.self_training_rounds and getattr(strategy, "self_trains", False) else None)
    st_log: dict[str, Any] | None = None
    if groups is not None:
        targets, st_log = self_train(cfg, groups, student, enc, targets,
                                                    hidden, train_idx, workdir, key, device,
                                                    report)
    train_seconds = time.perf_counter() - started
    every = np.arange(len(corpus))
    logits = predict_logits(student, enc, every, d.batch_size, device)
    # Folded into the head's bias, so every consumer of the artifact decides the same way.
    bias = match_decisions(logits, targets, multi)
    with torch.no_grad():
        student.head.bias.add_(torch.as_tensor(bias, dtype=student.head.bias.dtype,
                                               device=student.head.bias.device))
    temperature = fit_temperature(logits[hold_idx] + bias, targets[hold_idx], multi)
    adapter = cfg.student.adapter
    # peft types peft_config by the base PeftConfig; this one is a LoraConfig.
    targeted = sorted(student.encoder.peft_config["default"].target_modules)  # type: ignore[attr-defined]
    files = save_student(student, out_dir, {
        "labels": cfg.task.label_names, "multi_label": multi,
        "base_model": base.uri, "base_sha256": base.sha256,
        "max_length": cfg.student.max_length, "pooling": "mean", "temperature": temperature,
        "adapter": {"type": "lora", "r": adapter.r, "alpha": adapter.lora_alpha,
                    "dropout": adapter.dropout,
                    "target_modules": targeted},
    })
    projector = sum(p.numel() for p in student.projector.parameters()) if student.projector else 0
    meta = {"key": key, "files": files, "log": logs, "self_training": st_log,
            "decisions": ann.record.get("decisions"),
            "train_seconds": round(train_seconds, 3),
            "temperature": temperature, "decision_bias": [round(float(b), 4) for b in bias],
            "trainable_params": student.trainable_parameters() - projector,
            "total_params": student.total_parameters() - projector}
    atomic_json(meta_path, meta)
    report(Stage.DISTILLING, phases[-1].name, 1.0)
    return student, tokenizer, meta


def self_train(cfg: EngineConfig, groups: Groups, student: Student, enc: Encoded,
               targets: np.ndarray, hidden: np.ndarray | None, train_idx: np.ndarray,
               workdir: Path, key: str, device: torch.device, report: ReportFn
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Self-training rounds (worker/distill/self_training.py); returns the final targets
    [N, K] and a log of every round (kept or discarded, and why). Each round is
    checkpointed like a phase."""
    d, multi = cfg.distillation, cfg.task.multi_label
    ref = np.arange(len(enc))
    loss = "soft_bce" if multi else "soft_ce"

    references = judge_without_student(groups, ref, d.seed)

    def as_annotator(t: np.ndarray) -> tuple[list[np.ndarray], float]:
        pooled = predict_pooled(student, enc, ref, d.batch_size, device)
        mine = student_annotators(pooled, t, ref, multi, d.seed)
        return mine, independent_agreement(references, mine, ref)

    mine, score = as_annotator(targets)
    rounds: list[dict[str, Any]] = []
    log: dict[str, Any] = {"rounds": rounds, "agreement_before": round(score, 4),
                           "stopped": "rounds used up"}
    for r in range(1, d.self_training_rounds + 1):
        ckpt = workdir / f"self-train-{r}"
        resumed = _resume(ckpt, key, student)
        if resumed is not None:
            targets, meta = resumed
            rounds.append(meta["log"])
            if not meta["log"]["kept"]:
                log["stopped"] = meta["log"]["why"]
                break
            mine, score = as_annotator(targets)
            continue
        report(Stage.DISTILLING, f"self-train {r}", 1.0)
        new_targets, skills = refreshed_targets(groups, mine, ref, d.seed)
        moved = changed(targets, new_targets, multi)
        entry: dict[str, Any] = {"round": r, "changed": round(moved, 4), "judge": skills}
        if moved < MIN_CHANGE:
            entry.update(kept=False, why=f"converged: {moved:.1%} of labels changed")
        else:
            before = {n: p.detach().clone() for n, p in student.named_parameters()
                      if p.requires_grad}
            weights = 0.1 + 0.9 * confidence(new_targets, multi)
            phase = Phase(f"self-train-{r}", train_idx, 1, loss, (1.0, 1.0), weights)
            train_log = train_phases(student, enc, new_targets, hidden, [phase],
                                     batch_size=d.batch_size, learning_rate=d.learning_rate,
                                     seed=d.seed + 100 + r, device=device)
            new_mine, new_score = as_annotator(new_targets)
            change, noise = agreement_change(references, mine, new_mine, ref, d.seed + r)
            entry.update(agreement=round(new_score, 4), change=round(change, 4),
                         change_se=round(noise, 4), **{
                             k: v for k, v in train_log.phases[phase.name].items()
                             if k != "losses"})
            if change < -noise:
                student.load_state_dict(before, strict=False)
                entry.update(kept=False, why=f"discarded: agreement with the other annotators "
                             f"fell from {score:.4f} to {new_score:.4f}, more than its "
                             f"standard error {noise:.4f}")
            else:
                entry.update(kept=True, why="kept")
                targets, mine, score = new_targets, new_mine, new_score
        rounds.append(entry)
        _save_phase(ckpt, student, targets, {"key": key, "log": entry})
        if not entry["kept"]:
            log["stopped"] = entry["why"]
            break
    log["agreement_after"] = round(score, 4)
    return targets, log

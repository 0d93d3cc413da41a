"""Training the student in phases: each phase picks texts, a label loss and a representation term.

The adaptive schedule is align -> easy -> full -> refine (DESIGN.md 5.2); vanilla KD is a
single `full` phase with soft labels only. Both run through `train_phases`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from worker.distill.losses import LOSSES
from worker.distill.student import Student

WARMUP_SHARE = 0.06  # linear warm-up over the first 6% of steps (BERT fine-tuning practice)
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
ALIGN_TAU = 0.1  # InfoNCE temperature; 0.05-0.1 is usual for sentence embeddings


@dataclass
class Encoded:
    """Token ids of every text, truncated to the student's max_length."""

    ids: list[list[int]]
    truncated: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> Encoded:
    # One token of slack tells which texts were cut; the tokenizer keeps the closing [SEP].
    full = tokenizer(texts, add_special_tokens=True, truncation=True,
                     max_length=max_length + 1)["input_ids"]
    ids = [seq[:max_length - 1] + seq[-1:] if len(seq) > max_length else seq for seq in full]
    truncated = np.array([len(s) > max_length for s in full], dtype=bool)
    return Encoded(ids, truncated, tokenizer.pad_token_id or 0)


def collate(enc: Encoded, idx: np.ndarray, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(enc.ids[i]) for i in idx)
    ids = torch.full((len(idx), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq = enc.ids[i]
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    return ids.to(device), mask.to(device)


def batches(enc: Encoded, indices: np.ndarray, batch_size: int,
            rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches of similar length (less padding), in shuffled order."""
    if len(indices) == 0:
        return
    shuffled = rng.permutation(indices)
    window = batch_size * 8
    out = []
    for start in range(0, len(shuffled), window):
        chunk = shuffled[start:start + window]
        chunk = chunk[np.argsort([len(enc.ids[i]) for i in chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    for k in rng.permutation(len(out)):
        yield out[k]


@dataclass
class Phase:
    """One stage of the schedule.

    Args:
        name: align | easy | full | refine | train.
        indices: the texts this phase trains on.
        epochs: passes over `indices` (fractions allowed).
        loss: label loss name in LOSSES, or None (representation only).
        temperature: (start, end) of the KD temperature, annealed linearly across the phase.
        weights: per-text weight over the whole corpus (confidence), or None for uniform.
        align_weight: weight of the representation term (0 turns it off).
        align_loss: "contrastive" or "mse".
        refine: before training, ask the strategy which texts to train on and with which
            (re-annotated) targets, given the student's current predictions.
    """

    name: str
    indices: np.ndarray
    epochs: float
    loss: str | None
    temperature: tuple[float, float] = (1.0, 1.0)
    weights: np.ndarray | None = None
    align_weight: float = 0.0
    align_loss: str = "contrastive"
    refine: bool = False

    def steps(self, batch_size: int) -> int:
        return math.ceil(len(self.indices) / batch_size) * max(1, math.ceil(self.epochs))


@dataclass
class TrainLog:
    """Per-phase losses and wall time, recorded in the job's metrics."""

    phases: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)


def make_optimizer(student: Student, lr: float, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    warmup = max(1, int(WARMUP_SHARE * total_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train_phases(student: Student, enc: Encoded, targets: np.ndarray,
                 teacher_hidden: np.ndarray | None, phases: list[Phase], *, batch_size: int,
                 learning_rate: float, seed: int, device: torch.device,
                 on_step: Callable[[str, int, int, float], None] | None = None) -> TrainLog:
    """Train the student through `phases`; `on_step(phase, step, total, loss)` after each step."""
    rng = np.random.default_rng(seed)
    total = sum(p.steps(batch_size) for p in phases)
    optimizer, scheduler = make_optimizer(student, learning_rate, total)
    target_t = torch.tensor(targets, dtype=torch.float32, device=device)
    hidden_t = (torch.tensor(teacher_hidden, dtype=torch.float32, device=device)
                if teacher_hidden is not None else None)
    log = TrainLog()
    done = 0
    student.train()
    for phase in phases:
        started, losses = time.perf_counter(), []
        weights = (torch.tensor(phase.weights, dtype=torch.float32, device=device)
                   if phase.weights is not None else None)
        steps = phase.steps(batch_size)
        step_in_phase = 0
        full_epochs, remainder = divmod(phase.epochs, 1)
        passes = [1.0] * int(full_epochs) + ([remainder] if remainder else [])
        for share in passes:
            idx_all = rng.permutation(phase.indices)[: max(1, int(len(phase.indices) * share))]
            for idx in batches(enc, idx_all, batch_size, rng):
                frac = step_in_phase / max(1, steps - 1)
                temp = phase.temperature[0] + frac * (phase.temperature[1] - phase.temperature[0])
                ids, mask = collate(enc, idx, device)
                logits, pooled = student(ids, mask)
                sel = torch.as_tensor(idx, device=device)
                loss = torch.zeros((), device=device)
                if phase.loss:
                    w = weights[sel] if weights is not None else None
                    loss = loss + LOSSES[phase.loss](logits, target_t[sel], temperature=temp,
                                                     weights=w)
                if phase.align_weight and hidden_t is not None and student.projector is not None:
                    projected = student.projector(pooled)
                    loss = loss + phase.align_weight * LOSSES[phase.align_loss](
                        projected, hidden_t[sel], tau=ALIGN_TAU)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for p in student.parameters() if p.requires_grad], MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                done += 1
                step_in_phase += 1
                if on_step:
                    on_step(phase.name, done, total, losses[-1])
        log.phases[phase.name] = {
            "texts": int(len(phase.indices)), "steps": step_in_phase,
            "seconds": round(time.perf_counter() - started, 3),
            "loss_first": losses[0] if losses else float("nan"),
            "loss_last": float(np.mean(losses[-5:])) if losses else float("nan"),
            "losses": [round(x, 5) for x in losses[:: max(1, len(losses) // 50)]],
        }
    student.eval()
    return log


@torch.inference_mode()
def predict_logits(student: Student, enc: Encoded, indices: np.ndarray, batch_size: int,
                   device: torch.device) -> np.ndarray:
    """Student logits for `indices`, in that order (length-sorted internally for speed)."""
    student.eval()
    out = np.zeros((len(indices), student.head.out_features), dtype=np.float32)
    order = np.argsort([len(enc.ids[i]) for i in indices], kind="stable")
    for start in range(0, len(indices), batch_size):
        pos = order[start:start + batch_size]
        ids, mask = collate(enc, np.asarray(indices)[pos], device)
        logits, _ = student(ids, mask)
        out[pos] = logits.float().cpu().numpy()
    return out


@torch.inference_mode()
def predict_pooled(student: Student, enc: Encoded, indices: np.ndarray, batch_size: int,
                   device: torch.device) -> np.ndarray:
    """The student's pooled sentence embeddings [len(indices), H], in `indices` order."""
    student.eval()
    out: np.ndarray | None = None
    order = np.argsort([len(enc.ids[i]) for i in indices], kind="stable")
    for start in range(0, len(indices), batch_size):
        pos = order[start:start + batch_size]
        ids, mask = collate(enc, np.asarray(indices)[pos], device)
        _, pooled = student(ids, mask)
        if out is None:
            out = np.zeros((len(indices), pooled.shape[1]), dtype=np.float32)
        out[pos] = pooled.float().cpu().numpy()
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)

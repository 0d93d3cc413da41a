"""The student: a small encoder + peft LoRA adapter + mean pooling + a linear head.

Only the adapter, the head (and, while training, a projector onto the teacher's hidden space)
train. A saved student is those weights as safetensors plus JSON: the base encoder is named
by URI and checksum, so many students share one copy of it in memory when served.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from worker.distill.config import AdapterConfig, ConfigError, StudentConfig
from worker.distill.sources import ResolvedModel, loading, sha256_file

FORMAT_VERSION = 1
ADAPTER_FILE, HEAD_FILE, META_FILE = "adapter.safetensors", "head.safetensors", "student.json"
HEAD_DROPOUT = 0.1  # light regularisation; the corpus is small and teacher labels are noisy


class ArtifactError(Exception):
    """A saved student that must not be loaded (missing file, checksum mismatch)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def lora_config(adapter: AdapterConfig) -> LoraConfig:
    return LoraConfig(r=adapter.r, lora_alpha=adapter.lora_alpha, lora_dropout=adapter.dropout,
                      target_modules=adapter.target_modules, bias="none")


def load_base(base: ResolvedModel) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load the frozen base encoder and its tokenizer from local files.

    Raises:
        ModelSourceError: `student_unloadable` when the files do not parse or a tokenizer
            dependency is missing (the message names the exception type, quotes no file).
    """
    with loading(base, code="student_unloadable"):
        tokenizer = AutoTokenizer.from_pretrained(str(base.path))
        encoder = AutoModel.from_pretrained(str(base.path), dtype=torch.float32)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, tokenizer


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


class Student(nn.Module):
    """Encoder with one active adapter, a classification head and an optional projector.

    Args:
        encoder: a PeftModel wrapping the frozen base encoder.
        num_labels: outputs of the head.
        proj_dim: size of the teacher's hidden state to align with, or None.
    """

    def __init__(self, encoder: PeftModel, num_labels: int, proj_dim: int | None = None) -> None:
        super().__init__()
        hidden = int(encoder.config.hidden_size)  # PeftModel forwards to the encoder's config
        self.encoder = encoder
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.head = nn.Linear(hidden, num_labels)
        self.projector = nn.Linear(hidden, proj_dim) if proj_dim else None

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.embed(input_ids, attention_mask)
        return self.head(self.dropout(pooled)), pooled

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_student(base: ResolvedModel, cfg: StudentConfig, num_labels: int,
                  proj_dim: int | None, seed: int) -> tuple[Student, PreTrainedTokenizerBase]:
    """Create a fresh student on top of the base encoder (adapter and head initialised).

    Raises:
        ConfigError: `student.adapter.target_modules` names no module peft can adapt.
    """
    torch.manual_seed(seed)
    encoder, tokenizer = load_base(base)
    try:
        peft_model = get_peft_model(encoder, lora_config(cfg.adapter))
    except ValueError as exc:  # peft: none of the named modules is in this encoder
        if cfg.adapter.target_modules is None:
            raise
        raise ConfigError("student.adapter.target_modules",
                          f"{cfg.adapter.target_modules} name no module of {base.uri} that "
                          "peft can adapt") from exc
    return Student(peft_model, num_labels, proj_dim), tokenizer


def save_student(student: Student, out_dir: Path, meta: dict[str, Any]) -> dict[str, str]:
    """Write adapter, head and metadata atomically; return {file name: sha256}.

    Every file and folder gets the mode the process umask gives a new file (0644 / 0755
    under the usual 022, 0640 / 0750 under 027), so an API running as another user of the
    group can read what a worker registered. (safetensors' `save_file` would write the
    weights owner-only, 0600, unlike the JSON beside them: the bytes are written here.)
    """
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():  # left by a crashed attempt: rewriting its files would keep their modes
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    adapter_sd = {k: v.detach().cpu().contiguous()
                  for k, v in get_peft_model_state_dict(student.encoder).items()}
    (tmp / ADAPTER_FILE).write_bytes(save(adapter_sd))
    head_sd = {f"head.{k}": v.detach().cpu().contiguous()
               for k, v in student.head.state_dict().items()}
    (tmp / HEAD_FILE).write_bytes(save(head_sd))
    (tmp / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
    files = {name: sha256_file(tmp / name) for name in (ADAPTER_FILE, HEAD_FILE, META_FILE)}
    for name in files:
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return files


@dataclass
class StudentArtifact:
    """A saved student, read and checksum-verified, not yet attached to an encoder."""

    meta: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(**self.meta["adapter"])


def read_artifact(directory: Path, files: dict[str, str] | None = None) -> StudentArtifact:
    """Read a saved student; with `files`, refuse it unless every checksum matches."""
    if files is not None:
        for name in (ADAPTER_FILE, HEAD_FILE, META_FILE):
            path = directory / name
            if name not in files or not path.is_file():
                raise ArtifactError("artifact_missing", f"{name} is missing from {directory}")
            if sha256_file(path) != files[name]:
                raise ArtifactError("artifact_corrupt",
                                    f"{name} does not match its registered sha256; refusing it")
    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ArtifactError("artifact_format", f"unknown student format {meta.get('format')}")
    return StudentArtifact(meta, load_file(str(directory / ADAPTER_FILE)),
                           load_file(str(directory / HEAD_FILE)))


def attach(encoder: nn.Module | PeftModel, artifact: StudentArtifact, name: str) -> PeftModel:
    """Add the artifact's adapter to `encoder` under `name` (wrapping it on first use)."""
    config = lora_config(artifact.adapter_config)
    if isinstance(encoder, PeftModel):
        encoder.add_adapter(name, config)
        model = encoder
    else:
        model = get_peft_model(encoder, config, adapter_name=name)
    result = set_peft_model_state_dict(model, artifact.adapter, adapter_name=name)
    # peft annotates the result as `namedtuple`; it is torch's _IncompatibleKeys.
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]  # type: ignore[attr-defined]
    if unexpected:
        raise ArtifactError("artifact_mismatch", f"adapter weights do not fit: {unexpected[:3]}")
    return model


def head_from(artifact: StudentArtifact) -> nn.Linear:
    weight, bias = artifact.head["head.weight"], artifact.head["head.bias"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return head.eval()

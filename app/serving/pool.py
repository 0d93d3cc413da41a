"""Loaded students: one copy of each base encoder, one adapter + head per served version.

Versions are attached to their base as named peft adapters, checksum-verified first; the
least recently used version is detached when more than `max_loaded` are in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from app.core.errors import Unavailable
from worker.distill.sources import ModelSourceError, resolve
from worker.distill.student import (
    ArtifactError,
    StudentArtifact,
    attach,
    head_from,
    load_base,
    mean_pool,
    read_artifact,
)


@dataclass
class Base:
    """One shared encoder with its tokenizer; `lock` serialises adapter switching."""

    encoder: nn.Module | PeftModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: set[str] = field(default_factory=set)


@dataclass
class Served:
    """One version ready to run: its base, adapter name, head and calibration."""

    key: str
    base_key: str
    head: nn.Linear
    labels: list[str]
    multi_label: bool
    max_length: int
    temperature: float


@dataclass
class Prediction:
    probs: np.ndarray  # [N, L] calibrated probabilities
    truncated: list[bool]


class ModelPool:
    """Thread-safe cache of served versions.

    Args:
        artifacts_root: the artifact store (versions' paths are relative to it).
        cache_dir: where base models are fetched to.
        max_loaded: versions kept attached; older ones are evicted (LRU).
    """

    def __init__(self, artifacts_root: Path, cache_dir: Path, max_loaded: int) -> None:
        self.artifacts_root, self.cache_dir, self.max_loaded = artifacts_root, cache_dir, max_loaded
        self.bases: dict[str, Base] = {}
        self.served: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, artifact_path: str, files: dict[str, str]) -> Served:
        """Return the served version `key` (e.g. "crisis:3"), loading it on first use."""
        with self._lock:
            if key in self.served:
                self.served.move_to_end(key)
                return self.served[key]
            directory = (self.artifacts_root / artifact_path).resolve()
            if not directory.is_relative_to(self.artifacts_root.resolve()):
                raise Unavailable(f"{key}: artifact path escapes the store", code="artifact_path")
            try:
                artifact = read_artifact(directory, files)
                served = self._attach(key, artifact)
            except (ArtifactError, ModelSourceError) as exc:
                raise Unavailable(f"{key} cannot be served: {exc.message}", code=exc.code) from exc
            self.served[key] = served
            while len(self.served) > self.max_loaded:
                self._evict(next(iter(self.served)))
            return served

    def _attach(self, key: str, artifact: StudentArtifact) -> Served:
        meta = artifact.meta
        base_key = f"{meta['base_model']}@{meta['base_sha256'][:16]}"
        base = self.bases.get(base_key)
        if base is None:
            resolved = resolve(meta["base_model"], self.cache_dir / "models")
            if resolved.sha256 != meta["base_sha256"]:
                raise ArtifactError("base_mismatch", f"base model {meta['base_model']} changed "
                                    "since training (sha256 differs)")
            encoder, tokenizer = load_base(resolved)
            base = Base(encoder.eval(), tokenizer)
            self.bases[base_key] = base
        with base.lock:
            base.encoder = attach(base.encoder, artifact, key)
            base.encoder.eval()
            base.adapters.add(key)
        return Served(key, base_key, head_from(artifact), artifact.labels,
                      bool(meta["multi_label"]), int(meta["max_length"]),
                      float(meta.get("temperature", 1.0)))

    def _evict(self, key: str) -> None:
        served = self.served.pop(key)
        base = self.bases[served.base_key]
        with base.lock:
            if isinstance(base.encoder, PeftModel) and len(base.adapters) > 1:
                base.encoder.delete_adapter(key)
            base.adapters.discard(key)
            if not base.adapters:
                del self.bases[served.base_key]

    def evict(self, key: str) -> None:
        with self._lock:
            if key in self.served:
                self._evict(key)

    @torch.inference_mode()
    def predict(self, served: Served, texts: list[str]) -> Prediction:
        """Calibrated probabilities for `texts` (truncated to the version's max_length)."""
        base = self.bases[served.base_key]
        with base.lock:
            # Inside the lock: a fast tokenizer keeps its padding/truncation settings in shared
            # state, and concurrent requests tear each other's batches (found by the soak test).
            enc = base.tokenizer(texts, padding=True, truncation=True,
                                 max_length=served.max_length, return_tensors="pt",
                                 return_overflowing_tokens=False, return_length=False)
            lengths = [len(x) for x in base.tokenizer(texts, add_special_tokens=True)["input_ids"]]
            encoder = base.encoder
            if isinstance(encoder, PeftModel):
                encoder.set_adapter(served.key)
            out = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            pooled = mean_pool(out.last_hidden_state, enc["attention_mask"])
        logits = served.head(pooled).float() / served.temperature
        probs = torch.sigmoid(logits) if served.multi_label else torch.softmax(logits, -1)
        return Prediction(probs.numpy(), [n > served.max_length for n in lengths])

    def stats(self) -> dict[str, Any]:
        return {"bases": len(self.bases), "versions": list(self.served)}

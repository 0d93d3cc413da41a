"""Loaded students: one copy of each base encoder, one adapter + head per served version.

Versions are attached to their base as named peft LoRA adapters, checksum-verified first.
Beyond `max_loaded` versions or `memory_budget` bytes of weights, the least recently used
version that no queued request needs is detached; a base with no version left is dropped.
A forward pass may mix versions of one base: peft's `adapter_names` routes each row
through its own adapter, and each row then goes through its own version's head.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from app.core.errors import Unavailable
from app.ops.metrics import SERVING_BYTES, SERVING_VERSIONS
from app.serving.compiled import Compiled, Compiler, pad, run
from worker.distill.calibration import probabilities
from worker.distill.sources import ModelSourceError, ResolvedModel, loading, resolve
from worker.distill.student import (
    ArtifactError,
    StudentArtifact,
    attach,
    head_from,
    load_base,
    mean_pool,
    read_artifact,
)

log = logging.getLogger(__name__)


def load_tokenizer(base: ResolvedModel) -> PreTrainedTokenizerBase:
    """The base encoder's tokenizer alone (a compiled version needs no torch encoder)."""
    with loading(base, code="student_unloadable"):
        return AutoTokenizer.from_pretrained(str(base.path))


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Base:
    """One shared encoder with its tokenizer; `lock` serialises forwards and adapter changes."""

    key: str
    encoder: nn.Module | PeftModel | None  # None: a compiled version (`compiled` runs it)
    tokenizer: Tokenizer  # the fast tokenizer's backend: thread-safe, no padding
    pad_id: int
    nbytes: int
    compiled: Compiled | None = None  # the ONNX graph of the one version this base serves
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: set[str] = field(default_factory=set)
    truncating: dict[int, Tokenizer] = field(default_factory=dict)

    def tokenizer_for(self, max_length: int) -> Tokenizer:
        """A copy of the tokenizer that truncates at `max_length` (never mutated afterwards)."""
        tok = self.truncating.get(max_length)
        if tok is None:
            tok = Tokenizer.from_str(self.tokenizer.to_str())
            tok.no_padding()
            tok.enable_truncation(max_length)
            self.truncating[max_length] = tok
        return tok


@dataclass
class Served:
    """One version ready to run: its base, adapter name, head and calibration."""

    key: str
    base_key: str
    head: nn.Linear | None  # None when compiled: the head is inside the graph
    labels: list[str]
    multi_label: bool
    max_length: int
    temperature: float
    nbytes: int
    pins: int = 0  # queued requests that need this version; it is not evicted while > 0
    precision: str = "torch"  # or the compiled graph's: "fp32", "int8"

    def calibrated(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled encoder states [N, H] -> calibrated probabilities [N, labels]."""
        assert self.head is not None, "a compiled version has no separate head"
        return probabilities(self.head(pooled), self.temperature, self.multi_label)


@dataclass
class Encoded:
    """Per text: token ids (specials included), whether it was cut, whether it is all specials."""

    ids: list[list[int]]
    truncated: list[bool]
    empty: list[bool]


class ModelPool:
    """Thread-safe cache of served versions.

    Args:
        artifacts_root: the artifact store (versions' paths are relative to it).
        cache_dir: where base models are fetched to.
        max_loaded: versions kept attached at most.
        memory_budget: bytes of weights (bases + adapters + heads + compiled graphs) kept
            loaded at most; the version just requested is always kept, even alone over it.
        compiler: serves versions through their compiled ONNX graph (TAILOR_SERVING_BACKEND
            onnx or auto); None serves every version on its shared torch base.
    """

    def __init__(self, artifacts_root: Path, cache_dir: Path, max_loaded: int,
                 memory_budget: int, compiler: Compiler | None = None) -> None:
        self.artifacts_root, self.cache_dir = artifacts_root.resolve(), cache_dir
        self.max_loaded, self.memory_budget = max_loaded, memory_budget
        self.compiler = compiler
        self.bases: dict[str, Base] = {}
        self.served: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()  # guards the two dicts; held briefly
        self._loading = threading.Lock()  # one load at a time; loads are rare and slow

    def pin(self, key: str) -> Served | None:
        """Version `key` pinned against eviction if it is loaded, else None (never loads)."""
        with self._lock:
            return self._pin(key) if key in self.served else None

    def acquire(self, key: str, artifact_path: str, files: dict[str, str]) -> Served:
        """Return version `key` (e.g. "crisis:3") pinned against eviction, loading it if needed.

        Call `release` when the request is done with it.
        """
        served = self.pin(key)
        if served is not None:
            return served
        with self._loading:
            with self._lock:
                if key in self.served:  # loaded by the request we waited for
                    return self._pin(key)
            served = self._load(key, artifact_path, files)
            with self._lock:
                self.served[key] = served
                pinned = self._pin(key)
                self._evict_over_limits()
            return pinned

    def hold(self, served: Served) -> None:
        """One more pin on a version the caller has pinned already (release it once more)."""
        with self._lock:
            served.pins += 1

    def release(self, served: Served) -> None:
        with self._lock:
            served.pins -= 1

    def warm(self, key: str, artifact_path: str, files: dict[str, str]) -> None:
        """Load `key` now (verifying its files) so that its first request finds it ready."""
        self.release(self.acquire(key, artifact_path, files))

    def _pin(self, key: str) -> Served:
        self.served.move_to_end(key)
        served = self.served[key]
        served.pins += 1
        return served

    def _load(self, key: str, artifact_path: str, files: dict[str, str]) -> Served:
        directory = (self.artifacts_root / artifact_path).resolve()
        if not directory.is_relative_to(self.artifacts_root):
            raise Unavailable(f"{key}: artifact path escapes the store", code="artifact_path")
        try:
            artifact = read_artifact(directory, files)  # every sha256 checked first
            if self.compiler is not None:
                served = self._compile(key, directory, artifact)
                if served is not None:
                    return served
            return self._attach(key, artifact)
        except (ArtifactError, ModelSourceError) as exc:
            log.error("refusing to serve %s: %s", key, exc.message)
            raise Unavailable(f"{key} cannot be served: {exc.message}", code=exc.code) from exc

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
            nbytes = _nbytes([*encoder.parameters(), *encoder.buffers()])
            base = Base(base_key, encoder.eval(), tokenizer.backend_tokenizer,
                        int(tokenizer.pad_token_id or 0), nbytes)
        assert base.encoder is not None  # a torch base: compiled ones have keys "onnx:..."
        with base.lock:
            base.encoder = attach(base.encoder, artifact, key).eval()
            base.adapters.add(key)
        with self._lock:
            self.bases[base_key] = base
        head = head_from(artifact)
        return Served(key, base_key, head, artifact.labels, bool(meta["multi_label"]),
                      int(meta["max_length"]), float(meta.get("temperature", 1.0)),
                      _nbytes(artifact.adapter.values()) + _nbytes(head.parameters()))

    def _compile(self, key: str, directory: Path, artifact: StudentArtifact) -> Served | None:
        """Serve `key` through its compiled graph: a base of its own holding the session and
        a tokenizer (no torch encoder). None when the compiler falls back to torch."""
        assert self.compiler is not None
        meta = artifact.meta
        resolved = resolve(meta["base_model"], self.cache_dir / "models")
        if resolved.sha256 != meta["base_sha256"]:
            raise ArtifactError("base_mismatch", f"base model {meta['base_model']} changed "
                                "since training (sha256 differs)")
        tokenizer = load_tokenizer(resolved)
        base = Base(f"onnx:{key}", None, tokenizer.backend_tokenizer,
                    int(tokenizer.pad_token_id or 0), 0, adapters={key})
        max_length, multi = int(meta["max_length"]), bool(meta["multi_label"])
        compiled = self.compiler.load(key, directory, base.tokenizer_for(max_length),
                                      base.pad_id, multi)
        if compiled is None:
            return None
        base.compiled, base.nbytes = compiled, compiled.path.stat().st_size
        with self._lock:
            self.bases[base.key] = base
        return Served(key, base.key, None, artifact.labels, multi, max_length,
                      float(meta.get("temperature", 1.0)), 0,
                      precision=compiled.decision.precision)

    def _evict_over_limits(self) -> None:
        # Called with self._lock held, right after the newest version went to the end.
        while len(self.served) > 1 and (len(self.served) > self.max_loaded
                                        or self.nbytes() > self.memory_budget):
            victim = next((k for k, s in self.served.items() if s.pins == 0), None)
            if victim is None or victim == next(reversed(self.served)):
                break  # everything else is in use: over the limit until requests finish
            self._evict(victim)
        SERVING_VERSIONS.set(len(self.served))
        SERVING_BYTES.set(self.nbytes())

    def _evict(self, key: str) -> None:
        served = self.served.pop(key)
        base = self.bases[served.base_key]
        with base.lock:
            base.adapters.discard(key)
            if not base.adapters:
                del self.bases[served.base_key]
            elif isinstance(base.encoder, PeftModel):
                base.encoder.delete_adapter(key)
        log.info("evicted %s from the serving pool", key)

    def evict(self, key: str) -> None:
        """Forget `key` (e.g. when it is archived) unless queued requests still need it."""
        with self._loading, self._lock:
            if key in self.served and self.served[key].pins == 0:
                self._evict(key)
            SERVING_VERSIONS.set(len(self.served))
            SERVING_BYTES.set(self.nbytes())

    def nbytes(self) -> int:
        return (sum(b.nbytes for b in self.bases.values())
                + sum(s.nbytes for s in self.served.values()))

    def encode(self, served: Served, texts: list[str]) -> Encoded:
        """Token ids per text, cut to the version's max_length; which texts were cut; which
        hold nothing but special tokens (the tokenizer dropped every character).

        `served` must be pinned. Raises whatever the tokenizer raises (TypeError for a
        string that is not valid Unicode): the caller encodes one request at a time.
        """
        tok = self.bases[served.base_key].tokenizer_for(served.max_length)
        encodings = tok.encode_batch(texts)
        return Encoded([e.ids for e in encodings], [bool(e.overflowing) for e in encodings],
                       [all(e.special_tokens_mask) for e in encodings])

    @torch.inference_mode()
    def forward(self, rows: list[tuple[Served, list[int]]]) -> list[np.ndarray]:
        """Calibrated probabilities per row; all rows share one base, versions may differ."""
        base = self.bases[rows[0][0].base_key]
        if base.compiled is not None:  # one version per compiled base: no routing needed
            return list(run(base.compiled.session, *pad([ids for _, ids in rows], base.pad_id)))
        width = max(len(ids) for _, ids in rows)
        input_ids = torch.full((len(rows), width), base.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (_, ids) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        assert base.encoder is not None
        with base.lock:
            out = base.encoder(input_ids=input_ids, attention_mask=mask,
                               adapter_names=[s.key for s, _ in rows])
        pooled = mean_pool(out.last_hidden_state, mask)
        probs: list[np.ndarray] = [np.empty(0)] * len(rows)
        for served in {s.key: s for s, _ in rows}.values():
            idx = [i for i, (s, _) in enumerate(rows) if s.key == served.key]
            p = served.calibrated(pooled[idx])
            for i, row in zip(idx, p.numpy(), strict=True):
                probs[i] = row
        return probs

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"bases": len(self.bases), "versions": list(self.served),
                    "bytes": self.nbytes()}

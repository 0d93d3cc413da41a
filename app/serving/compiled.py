"""Compiled copies of served versions: the version's fp32 ONNX graph and, where it keeps the
version's labels, a dynamically quantized int8 copy, both run with ONNX Runtime.

The fp32 graph is the version's ONNX export, byte for byte the `model.onnx` that
`GET .../export?format=onnx` ships (`worker.distill.export.build_onnx`: LoRA merged, mean
pooling, head and temperature inside, token ids -> calibrated probabilities), taken from the
export cache (app/serving/exports.py) so a version is exported once for both uses. The int8
copy is onnxruntime's dynamic quantization (`quantize_dynamic`: int8 weights, activations
quantized per batch at run time; Jacob et al., 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference"). Quantization moves MiniLM's
pooled states enough to flip some decisions of some heads, so it must prove itself per
version: int8 is served only where its labels agree with fp32's on at least
`min_agreement` of the version's held-out texts (at least `min_texts` of them).

Both graphs and the measured agreement are compiled once per version and kept beside the
exports (`<artifact folder>/exports/serving/`), each graph with its sha256 in `compiled.json`; a
copy whose bytes no longer match is rebuilt. The choice of precision is made at each load
from that measurement and the process's settings, and recorded in the registry.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from filelock import FileLock
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from app.core.db import UNAVAILABLE
from app.core.errors import Overloaded
from worker.distill.sources import ModelSourceError, sha256_file
from worker.distill.student import ArtifactError

log = logging.getLogger(__name__)

COMPILED_DIR = "exports/serving"  # inside the version's folder: deleted with it
FP32_FILE, INT8_FILE, RECORD_FILE = "model.onnx", "model.int8.onnx", "compiled.json"
LOCK_FILE = "compile.lock"
RECORD_FORMAT = 1
# Agreement is measured in batches of this many held-out texts (serving's max batch).
MEASURE_BATCH = 32
MULTI_LABEL_CUT = 0.5  # a multi-label decision: every label at or above it (as /classify)
# A version whose compile failed is not compiled again for this long: each try holds the
# pool's one loading slot for up to an export build (~11 s for MiniLM on 2 cores), so
# retrying per request would let one broken version stall every other version's first load.
COMPILE_RETRY_SECONDS = 60
TRANSIENT = (Overloaded, *UNAVAILABLE)  # compile failures tried again at the next load


@dataclass
class CompiledRecord:
    """What was compiled for one version and how its int8 copy measured against fp32.

    Args:
        agreement: share of held-out texts whose decision int8 gives as fp32 does (None:
            the version has no held-out texts).
        texts: held-out texts measured.
        max_abs_diff: largest |p_int8 - p_fp32| over those texts and labels.
        files: {file name: sha256} of the graphs in the compiled folder.
    """

    agreement: float | None
    texts: int
    max_abs_diff: float | None
    files: dict[str, str]
    format: int = RECORD_FORMAT


@dataclass
class Decision:
    """The precision a version serves with ("int8" or "fp32") and why, in words."""

    precision: str
    reason: str


def decide(record: CompiledRecord, *, min_agreement: float, min_texts: int) -> Decision:
    """int8 only where it kept the decisions of at least `min_agreement` of at least
    `min_texts` held-out texts; otherwise fp32 (never int8 unmeasured)."""
    if record.agreement is None or record.texts < min_texts:
        return Decision("fp32", f"{record.texts} held-out texts, fewer than the {min_texts} "
                        "needed to trust an int8 agreement")
    share = f"int8 agrees with fp32 on {record.agreement:.2%} of {record.texts} held-out texts"
    if record.agreement >= min_agreement:
        return Decision("int8", f"{share} (>= {min_agreement:.2%})")
    return Decision("fp32", f"{share}, below {min_agreement:.2%}")


def compiled_dir(artifact_dir: Path) -> Path:
    return artifact_dir / COMPILED_DIR


def session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with `threads` intra-op threads and no inter-op pool.

    One serving thread runs every batch, so parallelism lives inside operators only; as with
    torch, a thread per core but one leaves the event loop its core.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray
        ) -> np.ndarray:
    """input_ids, attention_mask int64 [N, S] -> calibrated probabilities float32 [N, K]."""
    out = sess.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
    return np.asarray(out[0])


def pad(ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> right-padded input_ids and attention_mask, int64 [N, longest]."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return input_ids, mask


def decisions(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    """Each text's decision: the top label [N], or the labels at or above the cut [N, K]."""
    return probs >= MULTI_LABEL_CUT if multi_label else probs.argmax(axis=1)


def agreement(fp32: np.ndarray, int8: np.ndarray, multi_label: bool) -> float:
    """Share of texts whose whole decision is the same under both graphs ([N, K] each)."""
    a, b = decisions(fp32, multi_label), decisions(int8, multi_label)
    same = (a == b).all(axis=1) if multi_label else a == b
    return float(same.mean())


def probabilities(path: Path, ids: list[list[int]], pad_id: int, threads: int) -> np.ndarray:
    """Run the graph at `path` over token id lists in length-sorted batches; [N, K]."""
    sess = session(path, threads)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[np.ndarray] = [np.empty(0)] * len(ids)
    for start in range(0, len(order), MEASURE_BATCH):
        idx = order[start:start + MEASURE_BATCH]
        for i, row in zip(idx, run(sess, *pad([ids[i] for i in idx], pad_id)), strict=True):
            out[i] = row
    return np.stack(out)


def measure(fp32: Path, int8: Path, ids: list[list[int]], pad_id: int, *,
            multi_label: bool, threads: int) -> CompiledRecord:
    """The int8 graph's agreement with fp32 on held-out texts given as token ids (the
    record's `files` are left empty)."""
    if not ids:
        return CompiledRecord(None, 0, None, {})
    p32 = probabilities(fp32, ids, pad_id, threads)
    p8 = probabilities(int8, ids, pad_id, threads)
    return CompiledRecord(agreement(p32, p8, multi_label), len(ids),
                          round(float(np.abs(p32 - p8).max()), 6), {})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def read_record(folder: Path) -> CompiledRecord | None:
    """The compiled record of `folder` if every graph it names still matches its sha256."""
    try:
        data = json.loads((folder / RECORD_FILE).read_text())
        record = CompiledRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
    if record.format != RECORD_FORMAT:
        return None
    for name, digest in record.files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            log.warning("compiled %s does not match its sha256: rebuilding", path)
            return None
    return record


def compile_version(artifact_dir: Path, *, fp32_graph: Callable[[Path], None],
                    heldout: Callable[[], list[list[int]]], pad_id: int, multi_label: bool,
                    threads: int) -> CompiledRecord:
    """Build (or reuse) the version's fp32 and int8 graphs and measure their agreement.

    Args:
        artifact_dir: the version's verified artifact folder.
        fp32_graph: writes the version's fp32 graph to the path it is given.
        heldout: the version's held-out texts as token ids (called only when measuring).
        pad_id: the tokenizer's pad token id.

    Raises:
        whatever `fp32_graph` raises when the version cannot be exported.
    """
    folder = compiled_dir(artifact_dir)
    record = read_record(folder)
    if record is not None:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    # API processes sharing the store (workers of one server, replicas on one volume) may
    # load a version at the same moment: one builds, the others wait and find its record
    # rather than writing the same temp files under each other.
    with FileLock(folder / LOCK_FILE):
        record = read_record(folder)
        if record is not None:
            return record
        return _build(folder, fp32_graph=fp32_graph, heldout=heldout, pad_id=pad_id,
                      multi_label=multi_label, threads=threads)


def _build(folder: Path, *, fp32_graph: Callable[[Path], None],
           heldout: Callable[[], list[list[int]]], pad_id: int, multi_label: bool,
           threads: int) -> CompiledRecord:
    fp32, int8 = folder / FP32_FILE, folder / INT8_FILE
    fp32_graph(fp32)
    tmp = folder / (INT8_FILE + ".tmp")
    # Per-channel weight scales: per-tensor ones kept only 97.7% of a trained MiniLM
    # student's labels on 300 disaster-response texts, per-channel 99.7% (measured here).
    quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8, per_channel=True)
    os.replace(tmp, int8)
    record = measure(fp32, int8, heldout(), pad_id, multi_label=multi_label, threads=threads)
    record.files = {name: sha256_file(folder / name) for name in (FP32_FILE, INT8_FILE)}
    _write_json(folder / RECORD_FILE, asdict(record))
    log.info("compiled %s: int8 agreement %s on %d held-out texts", folder,
             record.agreement, record.texts)
    return record


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each non-empty text with the serving tokenizer (truncating)."""
    return [e.ids for e in tokenizer.encode_batch(texts) if not all(e.special_tokens_mask)]


@dataclass
class Compiled:
    """A version ready to serve through ONNX Runtime: its session, the graph file it runs
    (its bytes count against the serving memory budget) and the record behind the choice."""

    session: ort.InferenceSession
    path: Path
    record: CompiledRecord
    decision: Decision


class Compiler:
    """Compiles versions for the ONNX backend and records the outcome in the registry.

    Args:
        backend: "onnx" (a version that cannot be compiled is an error) or "auto" (it falls
            back to the torch path: `load` returns None).
        fp32_graph: (key, artifact_dir, out_path) -> None, writes the version's fp32 graph.
        threads: intra-op threads of each session.
        heldout: (name, version, limit) -> up to `limit` held-out texts of the version
            (app.serving.holdout).
        record: (name, version, CompiledRecord, Decision) -> None, stores the precision
            and the measured agreement.
        min_agreement, min_texts, max_texts: the int8 rule (TAILOR_SERVING_INT8_*).
    """

    def __init__(self, backend: str, *, fp32_graph: Callable[[str, Path, Path], None],
                 threads: int,
                 heldout: Callable[[str, int, int], list[str]],
                 record: Callable[[str, int, CompiledRecord, Decision], None],
                 min_agreement: float, min_texts: int, max_texts: int) -> None:
        self.backend, self.fp32_graph, self.threads = backend, fp32_graph, threads
        self.heldout, self.record = heldout, record
        self.min_agreement, self.min_texts, self.max_texts = min_agreement, min_texts, max_texts
        self._failed: dict[str, tuple[float, str]] = {}  # key -> (retry at, reason)

    def load(self, key: str, artifact_dir: Path, tokenizer: Tokenizer, pad_id: int,
             multi_label: bool) -> Compiled | None:
        """Compile (or reuse) version `key` ("name:3") and open a session on the precision
        chosen. `tokenizer` truncates at the version's max_length.

        A version whose compile failed is refused (onnx) or served with torch (auto) without
        a new try for COMPILE_RETRY_SECONDS.

        Raises:
            ArtifactError: `compile_failed`, backend "onnx" and the graph cannot be built.
        """
        name, version = key.rsplit(":", 1)

        def ids() -> list[list[int]]:
            return tokenize(tokenizer, self.heldout(name, int(version), self.max_texts))

        failed = self._failed.get(key)
        if failed is not None and failed[0] > time.monotonic():
            self._refuse(key, failed[1])
            return None
        try:
            record = compile_version(
                artifact_dir, fp32_graph=lambda out: self.fp32_graph(key, artifact_dir, out),
                heldout=ids, pad_id=pad_id, multi_label=multi_label, threads=self.threads)
        except Exception as exc:
            reason = exc.message if isinstance(exc, ArtifactError | ModelSourceError) else \
                f"{type(exc).__name__}: {exc}"
            log.exception("%s cannot be compiled", key)
            # Busy exporting for others, or the database away: not a broken version.
            if not isinstance(exc, TRANSIENT):
                self._failed[key] = (time.monotonic() + COMPILE_RETRY_SECONDS, reason)
            self._refuse(key, reason)
            return None
        self._failed.pop(key, None)
        decision = decide(record, min_agreement=self.min_agreement, min_texts=self.min_texts)
        log.info("%s served through ONNX Runtime, %s: %s", key, decision.precision,
                 decision.reason)
        self.record(name, int(version), record, decision)
        folder = compiled_dir(artifact_dir)
        path = folder / (INT8_FILE if decision.precision == "int8" else FP32_FILE)
        return Compiled(session(path, self.threads), path, record, decision)

    def _refuse(self, key: str, reason: str) -> None:
        """Backend "onnx": raise `compile_failed`; "auto": None (serve `key` with torch)."""
        if self.backend == "onnx":
            raise ArtifactError("compile_failed", f"its ONNX graph cannot be built ({reason})")
        log.warning("%s is served with torch: its ONNX graph cannot be built", key)
        return None

"""A registered student as one standalone model: LoRA merged into the encoder, then written as
an ONNX graph or a Hugging Face folder.

Both forms compute exactly what serving computes (app/serving/pool.py): the encoder with the
version's adapter, mean pooling over the attention mask, the linear head, then
`calibration.probabilities` at the version's temperature (softmax over labels, or a sigmoid
per label when multi-label). Merging follows peft's `merge_and_unload` (W + B·A·alpha/r folded
into each adapted weight, Hu et al., 2021, "LoRA"), so the exported encoder is a plain
transformers model with no peft at run time.

`build_onnx` is the seam the ONNX serving backend uses: its signature stays stable.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from worker.distill.calibration import probabilities
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

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")  # int64 [batch, sequence] each
OUTPUT_NAME = "probabilities"  # float32 [batch, labels], calibrated
# ONNX opset of the graph: 18 is the opset torch.onnx's function library is written in (torch
# 2.13); asking for torch's default (20) adds a version-conversion pass after export. Any
# onnxruntime since 1.14 runs opset 18.
ONNX_OPSET = 18
# A sample batch to trace with: two rows so batch is not specialised to 1, a short sequence.
SAMPLE_SHAPE = (2, 8)
ENCODER_DIR, HEAD_FILE = "encoder", "head.safetensors"


class ExportError(ArtifactError):
    """The exporter could not turn this encoder into a graph (`export_failed`)."""

    def __init__(self, message: str) -> None:
        super().__init__("export_failed", message)


@dataclass
class MergedStudent:
    """A registered student with its adapter merged into a plain encoder.

    Args:
        encoder: the base encoder (a transformers PreTrainedModel) with LoRA folded in.
        head: the linear head, weight [labels, hidden], bias [labels].
        tokenizer: the base encoder's tokenizer.
        meta: the artifact's student.json (labels, multi_label, max_length, temperature...).
    """

    encoder: PreTrainedModel
    head: nn.Linear
    tokenizer: PreTrainedTokenizerBase
    meta: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def multi_label(self) -> bool:
        return bool(self.meta["multi_label"])

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @property
    def max_length(self) -> int:
        return int(self.meta["max_length"])


class CalibratedStudent(nn.Module):
    """Token ids -> calibrated probabilities, in one module (what the ONNX graph holds)."""

    def __init__(self, merged: MergedStudent) -> None:
        super().__init__()
        self.encoder, self.head = merged.encoder, merged.head
        self.temperature, self.multi_label = merged.temperature, merged.multi_label

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: int64 [N, S] -> probabilities float32 [N, labels]."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = mean_pool(out.last_hidden_state, attention_mask)
        return probabilities(self.head(pooled), self.temperature, self.multi_label)


def load_merged(student: Path | StudentArtifact, *, models_dir: Path,
                files: dict[str, str] | None = None) -> MergedStudent:
    """Read a saved student (checksums checked when `files` is given), load its base encoder
    from `models_dir` (the model cache's `models` folder) and merge its adapter into it.

    Raises:
        ArtifactError: a missing or corrupt artifact file, or `base_mismatch` when the base
            model's sha256 differs from the one the student was trained on.
        ModelSourceError: the base model cannot be fetched or loaded.
    """
    artifact = read_artifact(student, files) if isinstance(student, Path) else student
    meta = artifact.meta
    base = resolve(meta["base_model"], models_dir)
    if base.sha256 != meta["base_sha256"]:
        raise ArtifactError("base_mismatch", f"base model {meta['base_model']} changed since "
                            "training (sha256 differs)")
    encoder, tokenizer = load_base(base)
    peft_model = attach(encoder, artifact, "default")
    merged = peft_model.merge_and_unload()
    merged.config.id2label = dict(enumerate(artifact.labels))
    merged.config.label2id = {label: i for i, label in enumerate(artifact.labels)}
    return MergedStudent(merged.eval(), head_from(artifact), tokenizer, meta)


def _sample(merged: MergedStudent) -> tuple[torch.Tensor, torch.Tensor]:
    # Real token ids (special tokens of the tokenizer's own vocabulary) keep tracing on the
    # path real input takes; the second row is padded so masking is traced too.
    ids = torch.full(SAMPLE_SHAPE, int(merged.tokenizer.pad_token_id or 0), dtype=torch.long)
    fill = int(merged.tokenizer.unk_token_id or 1)
    ids[0, :] = fill
    ids[1, : SAMPLE_SHAPE[1] // 2] = fill
    return ids, (ids != int(merged.tokenizer.pad_token_id or 0)).long()


def export_onnx(merged: MergedStudent, out_path: Path) -> Path:
    """Write `merged` as one ONNX graph to `out_path` (weights inside the file, fp32).

    Inputs `input_ids`, `attention_mask`: int64 [batch, sequence], both axes dynamic; output
    `probabilities`: float32 [batch, labels]. Exported with torch.onnx's dynamo exporter
    (torch.export + onnxscript). Written to a temporary file beside `out_path`, then renamed.

    Raises:
        ExportError: the exporter failed (its exception type in the message).
    """
    module = CalibratedStudent(merged).eval()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not ours
            try:
                torch.onnx.export(module, _sample(merged), tmp, input_names=list(INPUT_NAMES),
                                  output_names=[OUTPUT_NAME], opset_version=ONNX_OPSET,
                                  dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                                  external_data=False, dynamo=True, verbose=False)
            except Exception as exc:  # torch.export / onnxscript: an op it cannot translate
                log.exception("ONNX export failed")
                raise ExportError(f"torch.onnx could not export this encoder "
                                  f"({type(exc).__name__})") from exc
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out_path


def build_onnx(student: Path | StudentArtifact, out_path: Path, *, models_dir: Path,
               files: dict[str, str] | None = None) -> Path:
    """A registered student's fp32 ONNX graph: token ids -> calibrated probabilities.

    Args:
        student: the version's artifact folder (adapter, head, student.json), or the
            artifact already read with `read_artifact`.
        out_path: the .onnx file to write (atomically: temporary file, then rename).
        models_dir: the model cache's `models` folder, where the base encoder is fetched.
        files: {file name: sha256} to verify the artifact against, as serving does.

    Returns:
        `out_path`. Inputs `input_ids`, `attention_mask` int64 [batch, sequence]; output
        `probabilities` float32 [batch, labels].

    Raises:
        ArtifactError, ModelSourceError: as `load_merged`; ExportError (an ArtifactError,
            `export_failed`) when torch.onnx cannot translate the encoder.
    """
    return export_onnx(load_merged(student, models_dir=models_dir, files=files), out_path)


def save_hf(merged: MergedStudent, out_dir: Path) -> None:
    """Write `merged` as a Hugging Face folder: `encoder/` (weights, config and tokenizer that
    `AutoModel` / `AutoTokenizer.from_pretrained` load) and `head.safetensors` ({"weight":
    [labels, hidden], "bias": [labels]})."""
    encoder_dir = out_dir / ENCODER_DIR
    merged.encoder.save_pretrained(encoder_dir)
    merged.tokenizer.save_pretrained(encoder_dir)
    state = {k: v.detach().contiguous() for k, v in merged.head.state_dict().items()}
    (out_dir / HEAD_FILE).write_bytes(save(state))


__all__ = ["INPUT_NAMES", "OUTPUT_NAME", "ArtifactError", "CalibratedStudent", "ExportError",
           "MergedStudent", "ModelSourceError", "build_onnx", "export_onnx", "load_merged",
           "save_hf"]

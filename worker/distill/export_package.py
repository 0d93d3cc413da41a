"""A registered version as a folder that runs without Tailor, and that folder as a .tar.gz.

`onnx`: model.onnx (export.build_onnx's graph), tokenizer.json (truncating at the version's
max_length and padding to the longest text, as serving tokenizes), run.py.
`hf`: encoder/ (merged weights, config and tokenizer for `AutoModel`/`AutoTokenizer`),
head.safetensors, run.py.
Both: labels.json, tailor.json (labels, multi_label, max_length, temperature, base model and
its sha256, what the graph takes and gives), metrics.json, lineage.json and README.md, whose
first ```python block is run.py (worker/distill/export_examples.py).
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from worker.distill.export import (
    HEAD_FILE,
    INPUT_NAMES,
    ONNX_OPSET,
    OUTPUT_NAME,
    MergedStudent,
    export_onnx,
    load_merged,
    save_hf,
)
from worker.distill.export_examples import EXAMPLES
from worker.distill.student import StudentArtifact

FORMATS = ("onnx", "hf")
# What each README example imports; their versions are the ones the export was built with.
RUNTIME_PACKAGES = {"onnx": ("onnxruntime", "tokenizers", "numpy"),
                    "hf": ("transformers", "torch")}
# Weights are float32 noise to gzip: level 1 packs them within a few percent of level 9,
# several times faster, and an export is built while its first requester waits.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class VersionInfo:
    """What the registry knows about a version beyond its artifact files."""

    name: str
    version: int
    metrics: dict[str, Any]
    lineage: dict[str, Any]


def package_name(info: VersionInfo, fmt: str) -> str:
    """The folder (and archive stem) name: `crisis-v3-onnx`."""
    return f"{info.name}-v{info.version}-{fmt}"


def write_package(fmt: str, student: Path | StudentArtifact, out_dir: Path, info: VersionInfo,
                  *, models_dir: Path, files: dict[str, str] | None = None) -> Path:
    """Write the `fmt` export of a version into the new folder `out_dir`; return it.

    Raises:
        ValueError: `fmt` is not one of FORMATS.
        ArtifactError, ModelSourceError: as export.load_merged (the artifact or its base
            model cannot be read), or ExportError when the exporter fails.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    merged = load_merged(student, models_dir=models_dir, files=files)
    out_dir.mkdir(parents=True)
    if fmt == "onnx":
        export_onnx(merged, out_dir / "model.onnx")
        serving_tokenizer(merged).save(str(out_dir / "tokenizer.json"))
    else:
        save_hf(merged, out_dir)
    config = describe(fmt, merged, info)
    _write_json(out_dir / "tailor.json", config)
    _write_json(out_dir / "labels.json", merged.labels)
    _write_json(out_dir / "metrics.json", info.metrics)
    _write_json(out_dir / "lineage.json", info.lineage)
    (out_dir / "run.py").write_text(EXAMPLES[fmt])
    (out_dir / "README.md").write_text(readme(fmt, config, info))
    return out_dir


def serving_tokenizer(merged: MergedStudent) -> Tokenizer:
    """The base tokenizer as serving uses it (cut at max_length), padding each batch to its
    longest text with the encoder's pad token (masked out, so it changes no score)."""
    tok = Tokenizer.from_str(merged.tokenizer.backend_tokenizer.to_str())
    tok.enable_truncation(merged.max_length)
    pad_id = int(merged.tokenizer.pad_token_id or 0)
    tok.enable_padding(pad_id=pad_id, pad_token=str(merged.tokenizer.pad_token or "[PAD]"))
    return tok


def describe(fmt: str, merged: MergedStudent, info: VersionInfo) -> dict[str, Any]:
    """tailor.json: everything run.py reads, and what the export was built from and with."""
    meta = merged.meta
    config: dict[str, Any] = {
        "model": info.name, "version": info.version, "format": fmt, "labels": merged.labels,
        "multi_label": merged.multi_label, "max_length": merged.max_length,
        "temperature": merged.temperature, "pooling": "mean", "precision": "float32",
        "base_model": meta["base_model"], "base_sha256": meta["base_sha256"],
        "built_with": {pkg: metadata.version(pkg) for pkg in RUNTIME_PACKAGES[fmt]},
    }
    if fmt == "onnx":
        config["graph"] = {"file": "model.onnx", "opset": ONNX_OPSET,
                           "inputs": {n: "int64 [batch, sequence]" for n in INPUT_NAMES},
                           "outputs": {OUTPUT_NAME: "float32 [batch, labels], calibrated "
                                                    "(temperature inside)"}}
    else:
        config["files"] = {"encoder": "encoder/ (AutoModel, AutoTokenizer)",
                           "head": f"{HEAD_FILE} (weight [labels, hidden], bias [labels])"}
    return config


def readme(fmt: str, config: dict[str, Any], info: VersionInfo) -> str:
    """README.md of an export: how to run it (run.py is its first python block)."""
    # A local version label (torch's "+cpu") names a build, not a release an index serves.
    pins = " ".join(f"{pkg}=={ver.split('+')[0]}" for pkg, ver in config["built_with"].items())
    labels = ", ".join(f"`{label}`" for label in config["labels"])
    kind = "multi-label (a sigmoid per label)" if config["multi_label"] else \
        "single-label (softmax over labels)"
    student = info.metrics.get("student", {}) if isinstance(info.metrics, dict) else {}
    what = ("`model.onnx` is one graph from token ids to calibrated probabilities: the "
            "encoder with its LoRA adapter merged, mean pooling, the head and the temperature "
            "are inside. `tokenizer.json` truncates at "
            f"{config['max_length']} tokens and pads, as Tailor does."
            if fmt == "onnx" else
            "`encoder/` is the encoder with its LoRA adapter merged (`AutoModel` and "
            "`AutoTokenizer.from_pretrained` load it); `head.safetensors` holds the linear "
            "head applied to the mean-pooled last hidden state; divide its logits by "
            f"`temperature` ({config['temperature']:g}) from `tailor.json`.")
    return f"""# {info.name} v{info.version} ({fmt}), exported from Tailor

A {kind} text classifier distilled by Tailor. Labels: {labels}.

{what}

## Run it

```bash
python -m venv venv && venv/bin/pip install {pins}
printf 'Floods cut off three villages\\nTeam wins the cup final\\n' | venv/bin/python run.py
```

Each line of standard input is one text; each output line is what Tailor's `/classify`
answers for it: `{{"label": ..., "scores": {{label: probability}}, "truncated": bool}}`.
`--threshold` and `--top-k` work as /classify's `threshold` and `top_k`. This is `run.py`:

```python
{EXAMPLES[fmt]}```

## Files

- `tailor.json`: labels, multi_label, max_length, temperature, base model and sha256
- `labels.json`, `metrics.json` (student and teacher side by side), `lineage.json`
  (teacher, prompts, data sha256, code version)

Student held-out agreement with its teacher: {student.get("holdout_agreement", "n/a")}.
"""


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_archive(folder: Path, out_file: Path) -> Path:
    """Pack `folder` as a gzip'd tar whose one top-level entry is the folder's name, every
    member a regular file or directory, owner-neutral (uid/gid 0, no user names)."""

    def neutral(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        return member

    with tarfile.open(out_file, "w:gz", compresslevel=GZIP_LEVEL) as tar:
        tar.add(folder, arcname=folder.name, filter=neutral)
    with open(out_file, "rb") as fh:
        os.fsync(fh.fileno())
    return out_file

"""Teachers: the interface the engine scores through, and the one place a URI picks one.

- `base.py`: the `Teacher` interface, `TeacherScores`, `TeacherError`;
- `causal_lm.py`: a local causal LM (Hugging Face folder or GGUF) and the batching plumbing
  white-box scorers share;
- `hf.py`: `HFTeacher`, the white box: question prompts by next-token log-probabilities;
- `channel.py`: noisy-channel prompts (the text's likelihood after each label's prefix),
  scored by `HFTeacher` on the same model;
- `openai_compat.py`: `OpenAITeacher`, a black box behind an OpenAI-compatible server
  (`openai+http(s)://` URIs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from worker.distill.sources import ResolvedModel, SourcePolicy, is_openai_uri, resolve
from worker.distill.teachers.base import Teacher, TeacherError, TeacherScores
from worker.distill.teachers.causal_lm import pick_device
from worker.distill.teachers.hf import HFTeacher
from worker.distill.teachers.openai_compat import OpenAITeacher

__all__ = ["HFTeacher", "OpenAITeacher", "Teacher", "TeacherError", "TeacherScores",
           "is_black_box", "load_teacher", "pick_device", "resolve_teacher"]


def is_black_box(uri: str) -> bool:
    """Whether the teacher at `uri` answers without a vocabulary or hidden states."""
    return is_openai_uri(uri)


def resolve_teacher(uri: str, cache_dir: Path, *, policy: SourcePolicy | None = None,
                    index_url: str = "") -> ResolvedModel:
    """The teacher's files, fetched into `cache_dir` (see worker.distill.sources.resolve).

    A black box has no files: it resolves to its URI, whose digest stands in for a checksum.

    Raises:
        ModelSourceError: the URI is refused, outside `policy`, or cannot be fetched.
    """
    if is_black_box(uri):
        digest = hashlib.sha256(json.dumps([uri]).encode()).hexdigest()
        return ResolvedModel(uri, Path("."), None, digest)
    return resolve(uri, cache_dir, policy=policy, index_url=index_url)


def load_teacher(source: ResolvedModel, device: torch.device | str = "auto", *,
                 precision: str = "float32", cache_dir: Path | None = None) -> Teacher:
    """The teacher implementation for `source`'s URI scheme, loaded and ready to score.

    `precision` is the job's `teacher.precision` ("auto", "float32" or "bfloat16"; see
    CausalLM); a black box ignores it. `cache_dir` is the model cache: a GGUF teacher is
    converted there once and read from the converted folder afterwards
    (worker.distill.sources.converted).

    Raises:
        TeacherError: a black-box URI without a model name or with a bad option.
        ModelSourceError: `teacher_unloadable` when local files do not parse as a causal LM.
    """
    if is_black_box(source.uri):
        return OpenAITeacher(source.uri)
    return HFTeacher(source, device, precision=precision, convert_cache=cache_dir)

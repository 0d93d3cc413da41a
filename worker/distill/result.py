"""What a finished run hands back (`engine.run`): the student's files and what to record.

Kept apart from the engine and free of torch, so the registry (app.registry.service) types
what it registers without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """What a finished run leaves: the student's files, figures, lineage and warnings.

    Args:
        student_dir: the saved student (worker/distill/student.py), inside the artifact store.
        files: `{file name: sha256}` of what `student_dir` holds.
        metrics: teacher and student figures side by side (`{"teacher": {...}, "student":
            {...}, ...}`), as GET /jobs/{id} shows them.
        lineage: where the student came from; `lineage["config"]` is the run's whole
            EngineConfig as a dict (its `task` names the labels).
        base_model: the student's base model URI.
        warnings: `[{"code", "message"}]` for results that should not be trusted as they
            stand (worker/distill/warnings.py); empty when nothing looked degenerate.
    """

    student_dir: Path
    files: dict[str, str]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    base_model: str
    trainable_params: int = 0
    total_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)

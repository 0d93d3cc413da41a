"""Where a job keeps its work files, and how they go when the job is deleted.

A job's folder (`<artifacts>/jobs/<job id>`) holds its annotation and phase checkpoints and
the student it trained; a registered version points into it (`student/`), so deleting the
job removes everything there except what a version still references.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from app.core.config import get_settings


def job_workdir(job_id: str) -> Path:
    """Where a job keeps its checkpoints and student files (inside the artifact store)."""
    return get_settings().artifacts / "jobs" / job_id


def remove_work_files(job_id: str, keep: Iterable[str]) -> None:
    """Remove a deleted job's folder, except the artifact folders in `keep` (paths relative
    to the artifact store, the registered versions' `artifact_path`) and the folders above
    them. Missing files are not an error: a job that never ran has none."""
    root = get_settings().artifacts.resolve()
    workdir = job_workdir(job_id).resolve()
    if not workdir.is_relative_to(root / "jobs") or not workdir.is_dir():
        return
    kept = [(root / rel).resolve() for rel in keep]
    _prune(workdir, kept)
    if not any(workdir.iterdir()):
        workdir.rmdir()


def _prune(folder: Path, kept: list[Path]) -> None:
    for entry in folder.iterdir():
        if any(entry == k for k in kept):
            continue
        if any(k.is_relative_to(entry) for k in kept):
            _prune(entry, kept)  # a kept version lies further down
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)

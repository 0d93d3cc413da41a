"""A pass's folder in the shared artifact store: one result file per finished shard
(safetensors, written as temp file + rename, checked before use) or an error file (JSON).
Never pickle: a file another worker wrote is data, not code."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from app.jobs import seam
from worker.distill.shards import Shard
from worker.distill.teachers import TeacherScores
from worker.shard_leases import owner_id

log = logging.getLogger(__name__)


def pass_dir(job_id: str, call: str) -> Path:
    """Where a pass's shard results live: the job's workdir in the shared artifact store."""
    return seam.job_workdir(job_id) / "shards" / call


def result_path(folder: Path, index: int) -> Path:
    return folder / f"{index}.safetensors"


def error_path(folder: Path, index: int) -> Path:
    return folder / f"{index}.error.json"


def listing(folder: Path) -> set[str]:
    """The pass folder's file names: one readdir a look, not a stat per shard (a 200,000-text
    corpus is thousands of shards, on a network volume in distributed mode)."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def write_result(folder: Path, index: int, scores: TeacherScores, cache: str) -> None:
    """Store a shard's scores (temp file + rename), naming the cache they are also in."""
    arrays = {"logprobs": np.ascontiguousarray(scores.logprobs, dtype=np.float32)}
    if scores.hidden is not None:
        arrays["hidden"] = np.ascontiguousarray(scores.hidden, dtype=np.float32)
    tmp = folder / f".{index}.{owner_id().replace(':', '-')}.tmp"
    save_file(arrays, str(tmp), metadata={"cache": cache})
    os.replace(tmp, result_path(folder, index))


def read_result(folder: Path, index: int, shard: Shard | None = None
                ) -> tuple[TeacherScores, str] | None:
    """A finished shard's scores and the cache they are also in; None while unfinished.

    With `shard`, the file must hold its answer: logprobs [len(texts), K] (and hidden with
    one row per text). A file that is unreadable or of another shape (a disk that lost the
    tail of a rename, a worker of another version) is removed and counts as unfinished, so
    the shard is redone instead of the job failing or its rows shifting."""
    path = result_path(folder, index)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as fh:
            cache = (fh.metadata() or {}).get("cache", "")
            names = set(fh.keys())
            logprobs = fh.get_tensor("logprobs")
            hidden = fh.get_tensor("hidden") if "hidden" in names else None
    except (SafetensorError, OSError) as exc:
        _discard(path, f"unreadable ({exc})")
        return None
    if shard is not None:
        rows, k = len(shard.texts), len(shard.prompts[0].options)
        if logprobs.shape != (rows, k) or (hidden is not None and (
                hidden.ndim != 2 or hidden.shape[0] != rows)):
            _discard(path, f"logprobs {logprobs.shape} for a shard of {rows} texts and {k} "
                           f"options")
            return None
    return TeacherScores(logprobs, hidden), cache


def _discard(path: Path, why: str) -> None:
    log.warning("shard result %s is %s: removed, the shard is redone", path, why)
    path.unlink(missing_ok=True)


def write_error(folder: Path, index: int, code: str, message: str) -> None:
    tmp = folder / f".{index}.{owner_id().replace(':', '-')}.error.tmp"
    tmp.write_text(json.dumps({"code": code, "message": message}))
    os.replace(tmp, error_path(folder, index))


def read_error(folder: Path, index: int) -> tuple[str, str] | None:
    path = error_path(folder, index)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return str(data["code"]), str(data["message"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("shard error %s unreadable (%s): removed, the shard is redone", path, exc)
        path.unlink(missing_ok=True)
        return None

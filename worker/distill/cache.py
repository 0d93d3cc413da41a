"""Content-addressed teacher cache: (teacher id, prompt id, text sha256) -> scores.

The key never depends on a job, so retries, other jobs and annotation shards (DESIGN.md 9)
all reuse one another's teacher work. Stored in one SQLite file (WAL) per cache directory.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHUNK = 500  # SQLite's default limit on bound parameters is 999


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TeacherCache:
    """Persistent teacher outputs.

    Args:
        path: the SQLite file; created on first use.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scores (teacher TEXT, prompt TEXT, text TEXT,"
            " logprobs BLOB, hidden BLOB, PRIMARY KEY (teacher, prompt, text))")
        self._db.commit()

    def get(self, teacher: str, prompt: str, texts: Sequence[str]
            ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """Return {index in texts: (logprobs, hidden)} for the texts already scored."""
        keys = [text_key(t) for t in texts]
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        found: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        unique = list(where)
        with self._lock:
            for start in range(0, len(unique), CHUNK):
                chunk = unique[start:start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT text, logprobs, hidden FROM scores WHERE teacher=? AND prompt=?"
                    f" AND text IN ({marks})", (teacher, prompt, *chunk)).fetchall()
                for key, lp, hid in rows:
                    value = (np.frombuffer(lp, dtype=np.float32),
                             None if hid is None else np.frombuffer(hid, dtype=np.float32))
                    for i in where[key]:
                        found[i] = value
        return found

    def put(self, teacher: str, prompt: str, texts: Sequence[str], logprobs: np.ndarray,
            hidden: np.ndarray | None) -> None:
        """Store scores for `texts` (row i of the arrays belongs to texts[i])."""
        rows = [(teacher, prompt, text_key(t), logprobs[i].astype(np.float32).tobytes(),
                 None if hidden is None else hidden[i].astype(np.float32).tobytes())
                for i, t in enumerate(texts)]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?)", rows)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

"""Where a Tailor server's time goes under load: py-spy samples the running server's Python
stacks (all threads, busy samples only, without pausing the process) while a closed loop
drives it; each sample is put in the first category whose marker its stack holds.

py-spy is a system tool (not a project dependency); without it the profile says so.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 100
# Leaf frames of threads that wait rather than work (py-spy's idle detection misses some
# without pausing the process): anyio's worker threads and the batcher waiting for texts,
# and the event loop inside uvloop's native run (sockets, HTTP parsing, or nothing to do).
WAITING = {"Condition.wait": "waiting: idle worker threads, batcher waiting for texts",
           "Runner.run": "event loop inside uvloop (native I/O, HTTP parsing, or idle)"}
# (category, markers): a sample belongs to the first category with all markers in its stack.
CATEGORIES = [
    ("model: onnxruntime graph", ["run (", "serving/compiled.py"]),
    ("model: torch forward", ["forward (", "serving/pool.py"]),
    ("batcher: queue, split, answer", ["serving/batcher.py"]),
    ("tokenize", ["encode (", "serving/pool.py"]),
    ("text checks", ["core/texts.py"]),
    ("JSON body: strict parse + pydantic", ["strict_json.py"]),
    ("response: shape + serialise", ["serving/service.py"]),
    ("FastAPI/pydantic (validation, serialisation)", ["fastapi/"]),
    ("database: model reference refresh", ["sqlalchemy"]),
    ("metrics middleware", ["ops/metrics.py"]),
    ("HTTP: uvicorn, h11, starlette, asyncio", [""]),
]


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample process `pid` (and its children) for `seconds` into `out` (collapsed stacks)."""
    if not available():
        return None
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration",
                             str(max(1, round(seconds))), "--rate", str(RATE_HZ), "--format",
                             "raw", "--output", str(out), "--nonblocking", "--subprocesses"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _category(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1].split(" (")[0]
    if leaf in WAITING:
        return WAITING[leaf]
    for name, markers in CATEGORIES:
        if all(m in stack for m in markers):
            return name
    return CATEGORIES[-1][0]


def summarise(proc: subprocess.Popen[bytes] | None, out: Path, seconds: float
              ) -> dict[str, Any]:
    """Wait for py-spy; shares of samples per category, the top leaf functions, and how much
    of the wall time the model thread spent in forward passes."""
    if proc is None:
        return {"tool": None, "note": "py-spy not installed: no profile taken"}
    _, err = proc.communicate(timeout=120)
    if not out.exists():
        return {"tool": "py-spy", "note": f"py-spy failed: {err.decode()[-300:]}"}
    by_category: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        by_category[_category(stack)] += n
        leaf = stack.rsplit(";", 1)[-1]
        leaves[leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1]] += n
    total = sum(by_category.values()) or 1
    model = sum(v for k, v in by_category.items() if k.startswith("model:"))
    return {"tool": "py-spy", "rate_hz": RATE_HZ, "busy_samples": total,
            "model_thread_busy_share_of_wall": round(model / (RATE_HZ * seconds), 2),
            "shares": {k: round(v / total, 3) for k, v in by_category.most_common()},
            "top_leaves": [[k, round(v / total, 3)] for k, v in leaves.most_common(8)]}

"""The path a new user takes, on the real offline default models, kept small for CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.realmodels, pytest.mark.slow]


def test_demo_distils_registers_and_classifies_with_the_default_models(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TAILOR_CACHE_DIR", str(ROOT / "var" / "cache"))
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--train", "40", "--eval", "16",
         "--port", str(free_port()), "--home", str(tmp_path / "demo")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["model"] == "crisis" and summary["version"] == 1
    assert "corpus_too_small" in summary["warnings"]  # 40 texts: the demo says so
    assert any(line.startswith("WARNING corpus_too_small:") for line in lines)
    for side in ("teacher", "student"):
        assert 0.0 <= summary[side]["macro_f1"] <= 1.0
        assert summary[side]["ms_per_text"] > 0
    # A 23M-parameter student must be much cheaper per text than the 135M teacher.
    assert summary["student"]["ms_per_text"] < summary["teacher"]["ms_per_text"] / 3
    assert any("annotating" in line for line in lines), "live progress was shown"
    # teacher passes per text (corpus + eval), cache hits included: at least one pass a text
    assert summary["teacher"]["passes_per_text"] >= 1.0
    assert any(line.startswith("teacher passes: ") for line in lines)
    assert any(line.strip().startswith(("crisis", "not_crisis")) for line in lines)

"""bench/gpu.py runs on the GPU machine only when one is lent: check here, on tiny configs on
the CPU, that the script still runs end to end and writes what it promises."""

import json

from bench import gpu


def test_the_gpu_script_runs_on_tiny_configs(tmp_path):
    results = gpu.main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(tmp_path)])
    assert results["teacher_texts_per_s"]["float32"] > 0
    assert results["student"]["train_steps_per_s"] > 0
    assert results["student"]["serve_float32_texts_per_s"] > 0
    assert json.loads((tmp_path / "gpu.json").read_text()) == results
    table = (tmp_path / "gpu.md").read_text()
    assert "teacher forward, float32" in table and "student LoRA training" in table

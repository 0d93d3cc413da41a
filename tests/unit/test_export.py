"""The standalone student (worker/distill/export.py) on a tiny random student: the merged
encoder and the ONNX graph compute what serving computes, for any batch and length."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.fixtures.tiny import build_student as build_tiny
from tests.support import ROOT
from worker.distill.config import StudentConfig
from worker.distill.export import INPUT_NAMES, OUTPUT_NAME, build_onnx, load_merged
from worker.distill.export_examples import EXAMPLES
from worker.distill.sources import resolve
from worker.distill.student import ArtifactError, build_student, save_student


def saved_student(root: Path, *, multi_label: bool, temperature: float
                  ) -> tuple[Path, torch.nn.Module]:
    """A tiny student with a non-zero adapter, saved as the engine saves one."""
    base = resolve(str(build_tiny(root / "base")), root / "cache")
    student, _ = build_student(base, StudentConfig(max_length=16), num_labels=3,
                               proj_dim=None, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator))
    meta = {"labels": ["flood", "fire", "calm"], "multi_label": multi_label,
            "base_model": base.uri, "base_sha256": base.sha256, "max_length": 16,
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0,
                        "target_modules": sorted(
                            student.encoder.peft_config["default"].target_modules)},
            "temperature": temperature}
    save_student(student, root / "student", meta)
    return root / "student", student.eval()


def reference(student: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
              temperature: float, multi_label: bool) -> np.ndarray:
    with torch.no_grad():
        logits, _ = student(ids, mask)
    z = logits / temperature
    return (torch.sigmoid(z) if multi_label else torch.softmax(z, -1)).numpy()


def test_the_onnx_graph_gives_the_students_calibrated_probabilities(tmp_path):
    # Multi-label (a sigmoid in the graph) is covered end to end in test_export_route.py.
    folder, student = saved_student(tmp_path, multi_label=False, temperature=1.7)
    path = build_onnx(folder, tmp_path / "out" / "model.onnx", models_dir=tmp_path / "cache")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temp left
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    generator = torch.Generator().manual_seed(2)
    for batch, length in [(1, 3), (5, 12), (33, 40)]:  # other shapes than the traced one
        ids = torch.randint(5, 200, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length - 2:] = 0
        ids[mask == 0] = 0
        (probs,) = session.run([OUTPUT_NAME], {"input_ids": ids.numpy(),
                                               "attention_mask": mask.numpy()})
        assert probs.dtype == np.float32 and probs.shape == (batch, 3)
        expected = reference(student, ids, mask, 1.7, multi_label=False)
        assert np.abs(probs - expected).max() < 1e-4
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_a_changed_base_model_is_refused(tmp_path):
    folder, _ = saved_student(tmp_path, multi_label=False, temperature=1.0)
    weights = tmp_path / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError) as caught:
        load_merged(folder, models_dir=tmp_path / "cache")
    assert caught.value.code == "base_mismatch"


def test_the_readme_shows_the_examples_the_exports_ship():
    """README.md's "Run a student outside Tailor" opens with both run.py programs verbatim
    (the route tests check that each export's own README starts with its run.py); the
    drop-in InferenceClient example follows them."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run a student outside Tailor", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks[:2] == [EXAMPLES["onnx"], EXAMPLES["hf"]]

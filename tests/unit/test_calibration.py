"""worker/distill/calibration.py: one logits -> probabilities step, and the label-free fits."""

import numpy as np
import pytest
import torch

from worker.distill.calibration import (
    fit_temperature,
    match_decisions,
    probabilities,
)


def test_probabilities_are_the_same_for_numpy_and_torch_logits():
    """Trainer and benchmarks pass NumPy, serving passes tensors: one answer either way."""
    logits = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32) * 4
    for multi in (False, True):
        as_numpy = probabilities(logits, 2.5, multi)
        as_torch = probabilities(torch.from_numpy(logits), 2.5, multi)
        assert isinstance(as_numpy, np.ndarray) and isinstance(as_torch, torch.Tensor)
        np.testing.assert_allclose(as_numpy, as_torch.numpy(), atol=1e-6)
    single = probabilities(logits, 2.5, multi_label=False)
    np.testing.assert_allclose(single.sum(1), 1.0, atol=1e-6)
    z = logits / 2.5
    np.testing.assert_allclose(probabilities(logits, 2.5, multi_label=True),
                               1 / (1 + np.exp(-z)), atol=1e-6)


def test_a_higher_temperature_softens_every_answer():
    logits = np.array([[4.0, 0.0, -1.0], [0.5, 0.2, 3.0]])
    sharp, soft = probabilities(logits, 1.0, False), probabilities(logits, 3.0, False)
    assert (soft.max(1) < sharp.max(1)).all()
    assert (soft.argmax(1) == sharp.argmax(1)).all()


def test_fit_temperature_recovers_the_temperature_that_made_the_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 3)) * 3
    z = logits / 2.0
    target = np.exp(z - z.max(1, keepdims=True))
    target /= target.sum(1, keepdims=True)
    assert fit_temperature(logits, target, multi_label=False) == pytest.approx(2.0, rel=0.1)


def test_decision_matching_moves_the_boundary_to_the_teachers_rates():
    rng = np.random.default_rng(0)
    logits = np.stack([rng.normal(1.0, 1, 1000), rng.normal(0, 1, 1000)], axis=1)
    teacher = np.zeros((1000, 2))
    teacher[:300, 1] = 1.0  # the teacher says label 1 for 30% of texts
    teacher[300:, 0] = 1.0
    bias = match_decisions(logits, teacher, multi_label=False)
    share = ((logits + bias).argmax(1) == 1).mean()
    assert abs(share - 0.3) < 0.01
    multi = match_decisions(logits, (teacher > 0.5).astype(float), multi_label=True)
    assert abs(((logits[:, 1] + multi[1]) > 0).mean() - 0.3) < 0.01

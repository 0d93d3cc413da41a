import numpy as np
import pytest

from worker.distill import label_model as lm
from worker.distill.config import TaskConfig
from worker.distill.prompts import few_shot, prompt_pool


def _noisy_annotators(rng, truth, accuracies, k):
    votes = []
    for acc in accuracies:
        wrong = rng.random(len(truth)) > acc
        noise = (truth + rng.integers(1, k, len(truth))) % k
        votes.append(np.where(wrong, noise, truth))
    return np.stack(votes, axis=1)


def test_dawid_skene_ranks_annotators_by_their_true_accuracy():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 3000)
    votes = _noisy_annotators(rng, truth, [0.9, 0.8, 0.65], 2)
    model = lm.dawid_skene(votes, 2)
    est = model.accuracies
    assert est[0] > est[1] > est[2]
    assert est == pytest.approx([0.9, 0.8, 0.65], abs=0.04)
    # Better than the best single annotator and than the majority vote.
    majority = (votes.sum(1) >= 2).astype(int)
    assert (model.posterior.argmax(1) == truth).mean() >= (majority == truth).mean()
    weights = lm.accuracy_weights(model, 2)
    assert weights[0] > weights[2] and weights.sum() == pytest.approx(1.0)


def test_content_free_calibration_removes_a_constant_bias():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 500)
    fair = np.where(truth[:, None] == np.arange(2), 0.7, 0.3)
    bias = np.array([0.2, 0.8])
    biased = lm.normalize(fair * bias)
    assert (biased.argmax(1) == 1).all()  # the biased prompt always answers label 1
    fixed = lm.calibrate(biased, bias / bias.sum())
    assert (fixed.argmax(1) == truth).mean() == 1.0


def test_mutual_information_prefers_informative_prompts():
    confident_varied = np.array([[0.95, 0.05], [0.05, 0.95]] * 50)
    always_same = np.array([[0.95, 0.05]] * 100)
    undecided = np.full((100, 2), 0.5)
    mi = [lm.mutual_information(p) for p in (confident_varied, always_same, undecided)]
    assert mi[0] > 0.4 and mi[1] < 0.01 and mi[2] < 1e-6


def test_pool_offers_several_phrasings_and_keeps_text_placeholder():
    task = TaskConfig(labels=[{"name": "crisis", "description": "a disaster"},
                              {"name": "calm"}], instruction="Screen news.")
    (group,) = prompt_pool(task, ["Is {text} about a crisis?"])
    names = [p.name for p in group]
    assert names[0] == "default" and names[-1] == "user-1" and "letters" in names
    assert all(p.template.count("{text}") == 1 for p in group)
    assert len({p.id for p in group}) == len(group)
    letters = next(p for p in group if p.name == "letters")
    assert letters.options == ("A", "B")
    shot = few_shot(group[0], [("flood hits town", 0), ("market up", 1)])
    assert "Answer: crisis" in shot.template and "Answer: calm" in shot.template
    assert shot.template.endswith(group[0].template) and shot.id != group[0].id


def test_multi_label_pool_has_one_group_per_label():
    task = TaskConfig(labels=[{"name": "flood"}, {"name": "fire"}], multi_label=True)
    groups = prompt_pool(task, [])
    assert [g[0].label for g in groups] == ["flood", "fire"]
    assert all(p.options == ("yes", "no") for g in groups for p in g)

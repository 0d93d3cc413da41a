import torch
import torch.nn.functional as F

from worker.distill.losses import LOSSES


def test_soft_ce_with_one_hot_target_is_plain_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = F.cross_entropy(logits, target.argmax(-1))
    assert torch.allclose(LOSSES["soft_ce"](logits, target, temperature=1.0), expected, atol=1e-4)


def test_soft_ce_weights_ignore_zero_weight_items():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    only_first = LOSSES["soft_ce"](logits[:1], target[:1])
    weighted = LOSSES["soft_ce"](logits, target, weights=torch.tensor([1.0, 0.0]))
    assert torch.allclose(only_first, weighted)


def test_contrastive_prefers_matching_pairs():
    torch.manual_seed(0)
    teacher = torch.randn(8, 16)
    matched = LOSSES["contrastive"](teacher + 0.01 * torch.randn(8, 16), teacher)
    shuffled = LOSSES["contrastive"](teacher[torch.randperm(8)], teacher)
    assert matched < shuffled


def test_soft_bce_is_minimal_at_the_target():
    target = torch.tensor([[0.8, 0.1]])
    at_target = LOSSES["soft_bce"](torch.logit(target), target)
    off_target = LOSSES["soft_bce"](torch.tensor([[-2.0, 2.0]]), target)
    assert at_target < off_target

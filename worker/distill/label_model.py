"""Judging prompts without labels: calibration, mutual information, a Dawid-Skene label model.

With a small teacher, prompts differ wildly: some are biased towards one answer, some are
near random. Each prompt is calibrated (content-free inputs, Zhao et al. 2021), judged by the
mutual information between input and output on a probe sample (Sorensen et al. 2022), and the
survivors are weighted by the accuracy a Dawid-Skene model estimates for each of them when it
treats every prompt as a noisy annotator (Dawid & Skene 1979). No gold label is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-9
CONTENT_FREE = ("N/A", "", "[MASK]")  # inputs that carry no content (Zhao et al., 2021)
DS_ITERATIONS = 50
DS_SMOOTHING = 1.0  # Laplace counts in each confusion-matrix cell


def normalize(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, None)
    return p / p.sum(-1, keepdims=True)


def calibrate(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Divide out the prompt's answer bias measured on content-free inputs, renormalise."""
    return normalize(probs / np.clip(content_free, EPS, None))


def entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0)
    return -(p * np.log(p)).sum(-1)


def mutual_information(probs: np.ndarray) -> float:
    """I(X; Y) = H(mean prediction) - mean H(prediction): high for confident, varied answers."""
    return float(entropy(probs.mean(0)) - entropy(probs).mean())


@dataclass
class LabelModel:
    """A fitted Dawid-Skene model.

    Args:
        prior: [K] class prior.
        confusion: [J, K, K] P(annotator j says k | true class c) as confusion[j, c, k].
        posterior: [N, K] P(true class | all votes) per item.
    """

    prior: np.ndarray
    confusion: np.ndarray
    posterior: np.ndarray

    @property
    def accuracies(self) -> np.ndarray:
        """Estimated accuracy of each annotator: sum_c prior_c * P(says c | c)."""
        diag = np.diagonal(self.confusion, axis1=1, axis2=2)  # [J, K]
        return (diag * self.prior[None, :]).sum(1)


def dawid_skene(votes: np.ndarray, k: int, init: np.ndarray | None = None,
                one_coin: bool = True) -> LabelModel:
    """Fit Dawid-Skene by EM on hard votes [N, J] (class indices), starting from `init`.

    With `one_coin`, each annotator has one accuracy and spreads its errors evenly: far
    better identified with the 3-5 annotators a prompt ensemble has (the full confusion
    model has as many parameters as three binary annotators have vote patterns).
    """
    n, j = votes.shape
    onehot = np.zeros((n, j, k))
    onehot[np.arange(n)[:, None], np.arange(j)[None, :], votes] = 1.0
    q = normalize(init if init is not None else onehot.mean(1) + 1e-3)
    eye = np.eye(k)[None, :, :]
    for _ in range(DS_ITERATIONS):
        prior = normalize(q.mean(0))
        counts = np.einsum("nc,njk->jck", q, onehot) + DS_SMOOTHING
        if one_coin:
            right = (counts * eye).sum((1, 2)) / counts.sum((1, 2))  # [J]
            wrong = (1 - right) / max(1, k - 1)
            confusion = eye * right[:, None, None] + (1 - eye) * wrong[:, None, None]
        else:
            confusion = counts / counts.sum(-1, keepdims=True)
        log_q = np.log(prior)[None, :] + np.einsum("njk,jck->nc", onehot, np.log(confusion))
        new_q = normalize(np.exp(log_q - log_q.max(1, keepdims=True)))
        if np.abs(new_q - q).max() < 1e-6:
            q = new_q
            break
        q = new_q
    return LabelModel(normalize(q.mean(0)), confusion, q)


def accuracy_weights(model: LabelModel, k: int) -> np.ndarray:
    """Weights from estimated accuracy above chance (an annotator at chance weighs nothing)."""
    above = np.clip(model.accuracies - 1.0 / k, 0.0, None)
    if above.sum() <= 0:
        return np.full(len(above), 1.0 / len(above))
    return above / above.sum()


def combine(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the annotators' distributions (soft labels stay soft)."""
    stacked = np.stack(probs)  # [J, N, K]
    return normalize(np.tensordot(weights, stacked, axes=1))

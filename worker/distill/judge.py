"""The label-free judge: several label models over calibrated scores, one chosen per job.

The teacher's prompts, the embedding labeler and (in self-training rounds) the student are
annotators: each gives a distribution over the labels for every text. The judge

1. turns each annotator's distribution into scores (centred log-probabilities) and moves
   its decision threshold so that its answers match a class prior estimated without labels
   (class-balance matching, as in Saerens et al., 2002): a prompt that says "crisis" to 95%
   of texts is not outvoted for its bias but kept for its ranking;
2. fits candidate label models to those scores, each giving a posterior [N, K] whose
   decisions are matched to the prior the weighted mixture estimates (see `fit`):
   - ``gaussian``: a K-component Gaussian mixture with one covariance shared by all classes
     (scikit-learn's GaussianMixture, "tied"); the shared covariance models how annotators
     err together, so two prompts of one teacher do not count as two independent votes
     (the score-based generative view of Ratner et al., 2019 and Fu et al., 2020, with
     correlations);
   - ``weighted``: a mixture of the annotators' matched distributions weighted by their
     estimated balanced accuracy above chance; annotators of one source share one weight;
   - ``dawid_skene``: the classic model on hard votes (Dawid & Skene, 1979);
3. chooses the label model with the highest *leave-one-source-out agreement*: fitted
   without one source (the teacher, the embedding labeler, the student), how well does its
   posterior rank texts the way the left-out source does (Spearman correlation, per class).
   Why this works without labels: if a source's errors are independent of the others'
   given the true class, the covariance between any function f of the other sources and
   that source's score is Cov(E[f|Y], E[score|Y]), so the f that separates the true classes
   best agrees best with every independent source.

No gold label is used anywhere here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from sklearn.mixture import GaussianMixture

from worker.distill.calibration import EPS, MIN_PRIOR, centred_log_probs, match_prior
from worker.distill.label_model import dawid_skene, normalize

# The label models `fit` knows: the registry that a job spec's `teacher.label_model` names
# (besides "auto", the choice among them).
LABEL_MODELS = ("gaussian", "weighted", "dawid_skene")
PRIOR_ROUNDS = 3  # prior estimate -> thresholds -> label model -> prior estimate ...
REG_COVAR = 1e-2  # added to the covariance's diagonal, in units of the standardised scores
TIE = 0.005  # criteria closer than this count as equal
# When the criterion cannot tell label models apart (one source: every fit without it uses
# the same annotators), this order decides; it is the benchmark's ranking (bench/quality.py).
DEFAULT_ORDER = ("gaussian", "weighted", "dawid_skene")


class JudgeError(Exception):
    """The judge found nothing to trust; `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Annotator:
    """One labeler's view of every text.

    Args:
        name: e.g. "question", "embedding", "student".
        source: what it shares errors with ("teacher" for every prompt of one teacher).
        probs: [N, K] distribution over labels per text (calibrated where it can be).
        informs_prior: whether its mean answer says anything about the class prior. The
            embedding labeler standardises its similarities over the corpus, so its mean
            answer is near uniform by construction and must not pull the prior estimate.
    """

    name: str
    source: str
    probs: np.ndarray
    informs_prior: bool = True


@dataclass
class Judgement:
    """What one label model concluded.

    Args:
        model: the label model's name (one of LABEL_MODELS).
        posterior: [N, K] P(label | every annotator) per text.
        prior: [K] estimated class prior.
        skill: [J] each annotator's estimated balanced accuracy (1/K is chance), measured
            against the other sources (see `_skill`).
        criterion: leave-one-source-out agreement (None when not computed).
        per_source: the criterion's parts, by left-out source.
    """

    model: str
    posterior: np.ndarray
    prior: np.ndarray
    skill: np.ndarray
    criterion: float | None = None
    per_source: dict[str, float] = field(default_factory=dict)


def balanced_accuracy(probs: np.ndarray, posterior: np.ndarray) -> float:
    """Soft balanced accuracy of one annotator's argmax against a posterior [N, K]."""
    k = posterior.shape[1]
    said = np.eye(k)[probs.argmax(1)]
    per_class = (posterior * said).sum(0) / np.clip(posterior.sum(0), EPS, None)
    return float(per_class.mean())


def _features(matched: Sequence[np.ndarray], ref: np.ndarray) -> np.ndarray:
    """Standardised score differences [N, J*(K-1)]: each annotator's scores against its last
    class, z-scored over `ref`."""
    cols = []
    for p in matched:
        s = centred_log_probs(p)
        f = s[:, :-1] - s[:, -1:]
        cols.append((f - f[ref].mean(0)) / (f[ref].std(0) + 1e-6))
    return np.concatenate(cols, axis=1)


def _gaussian(matched: Sequence[np.ndarray], init: np.ndarray, ref: np.ndarray,
              seed: int) -> np.ndarray:
    """Posterior [N, K] of a tied-covariance Gaussian mixture started from `init` [N, K]."""
    x = _features(matched, ref)
    k = init.shape[1]
    weights = np.clip(init[ref].mean(0), MIN_PRIOR, None)
    means = (init[ref].T @ x[ref]) / np.clip(init[ref].sum(0)[:, None], EPS, None)
    gmm = GaussianMixture(k, covariance_type="tied", weights_init=weights / weights.sum(),
                          means_init=means, reg_covar=REG_COVAR, max_iter=200,
                          random_state=seed)
    gmm.fit(x[ref])
    post = gmm.predict_proba(x)
    # Components follow their starting classes; the assignment makes that explicit.
    rows, cols = linear_sum_assignment(-(post[ref].T @ init[ref]))
    out = np.zeros_like(post)
    out[:, cols] = post[:, rows]
    return normalize(out)


def _skill(matched: Sequence[np.ndarray], sources: Sequence[str],
           posterior: np.ndarray) -> np.ndarray:
    """Each annotator's balanced accuracy [J] against a reference it took no part in: the
    other sources' mean (an annotator cannot vouch for itself, nor can its own teacher's
    other prompts); against `posterior` when there is only one source."""
    if len(set(sources)) < 2:
        return np.array([balanced_accuracy(p, posterior) for p in matched])
    out = np.zeros(len(matched))
    for src in set(sources):
        others = [m for m, s in zip(matched, sources, strict=True) if s != src]
        reference = _source_mean(others, [s for s in sources if s != src])
        for i, s in enumerate(sources):
            if s == src:
                out[i] = balanced_accuracy(matched[i], reference)
    return out


def _weighted(matched: Sequence[np.ndarray], sources: Sequence[str],
              posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mixture weighted by estimated balanced accuracy above chance; one source, one weight
    (its best annotator's), shared by its annotators in proportion to their own skill."""
    k = posterior.shape[1]
    skill = _skill(matched, sources, posterior)
    above = np.clip(skill - 1.0 / k, 1e-3, None)
    weights = np.zeros(len(matched))
    for src in set(sources):
        idx = [i for i, s in enumerate(sources) if s == src]
        weights[idx] = above[idx] / above[idx].sum() * above[idx].max()
    weights /= weights.sum()
    return normalize(np.tensordot(weights, np.stack(matched), axes=1)), skill


def _dawid_skene(matched: Sequence[np.ndarray], init: np.ndarray) -> np.ndarray:
    votes = np.stack([p.argmax(1) for p in matched], axis=1)
    if len(matched) < 3:  # not identifiable: the weighted start is the answer
        return init
    return dawid_skene(votes, init.shape[1], init, one_coin=False).posterior


def fit(model: str, annotators: Sequence[Annotator], ref: np.ndarray,
        seed: int = 0) -> Judgement:
    """Fit one label model on `ref` rows (the corpus) and label every row.

    Every model decides with the class prior the weighted mixture estimates: the Gaussian
    mixture's own mixing weights drift badly when the annotators are weak and their scores
    skewed (on crisis news it put 40% of texts in the 88% class), while its *ranking* of
    texts is often the best. So label models compete on ranking (`leave_one_source_out`)
    and share one threshold rule.

    Args:
        model: one of LABEL_MODELS.
        annotators: at least one; all [N, K] over the same texts.
        ref: indices of the rows the model is fitted on (the unlabeled corpus).

    Raises:
        ValueError: unknown model name or no annotator.
    """
    if model not in LABEL_MODELS:
        raise ValueError(f"unknown label model {model!r}; known: {LABEL_MODELS}")
    if not annotators:
        raise ValueError("no annotator to judge")
    sources = [a.source for a in annotators]
    raw = [normalize(a.probs) for a in annotators]
    # Start from the mean answer of the annotators whose answers carry a prior.
    informed = [p for p, a in zip(raw, annotators, strict=True) if a.informs_prior] or raw
    prior = normalize(np.mean([p[ref].mean(0) for p in informed], axis=0)[None, :])[0]
    for _ in range(PRIOR_ROUNDS):
        matched = [match_prior(p, prior, ref) for p in raw]
        start = _source_mean(matched, sources)
        posterior, _ = _weighted(matched, sources, start)
        prior = np.clip(posterior[ref].mean(0), MIN_PRIOR, None)
        prior = prior / prior.sum()
    if model == "gaussian":
        posterior = match_prior(_gaussian(matched, posterior, ref, seed), prior, ref)
    elif model == "dawid_skene":
        posterior = match_prior(_dawid_skene(matched, posterior), prior, ref)
    return Judgement(model, posterior, prior, _skill(matched, sources, posterior))


def _source_mean(matched: Sequence[np.ndarray], sources: Sequence[str]) -> np.ndarray:
    """Each source's mean distribution, sources averaged with equal weight."""
    per = [np.mean([m for m, s in zip(matched, sources, strict=True) if s == src], axis=0)
           for src in dict.fromkeys(sources)]
    return normalize(np.mean(per, axis=0))


def agreement(posterior: np.ndarray, other: np.ndarray, ref: np.ndarray) -> float:
    """Mean over classes of Spearman's rank correlation between P(class) under `posterior`
    and under `other` ([N, K] each), over `ref` rows; one class suffices for two labels."""
    k = posterior.shape[1]
    classes = [0] if k == 2 else range(k)
    values = []
    for c in classes:
        a, b = posterior[ref, c], other[ref, c]
        if a.std() < EPS or b.std() < EPS:
            values.append(0.0)
            continue
        values.append(float(spearmanr(a, b).statistic))
    return float(np.mean(values))


def leave_one_source_out(model: str, annotators: Sequence[Annotator], ref: np.ndarray,
                         seed: int = 0) -> tuple[float | None, dict[str, float]]:
    """The selection criterion: mean over sources of the agreement between the model fitted
    without that source and that source's own mean distribution. None with one source."""
    sources = list(dict.fromkeys(a.source for a in annotators))
    if len(sources) < 2:
        return None, {}
    parts = {}
    for src in sources:
        rest = [a for a in annotators if a.source != src]
        left = normalize(np.mean([a.probs for a in annotators if a.source == src], axis=0))
        parts[src] = round(agreement(fit(model, rest, ref, seed).posterior, left, ref), 4)
    return float(np.mean(list(parts.values()))), parts


def judge(annotators: Sequence[Annotator], ref: np.ndarray, models: Sequence[str] = LABEL_MODELS,
          seed: int = 0, choose: str = "auto") -> tuple[Judgement, list[Judgement]]:
    """Fit every label model in `models`, score each by leave-one-source-out agreement and
    return (the chosen one, all of them). `choose` names a model to use regardless ("auto":
    the best criterion; ties within 0.005 and missing criteria go by DEFAULT_ORDER)."""
    fitted = []
    for name in models:
        j = fit(name, annotators, ref, seed)
        j.criterion, j.per_source = leave_one_source_out(name, annotators, ref, seed)
        fitted.append(j)
    if choose != "auto":
        return next(j for j in fitted if j.model == choose), fitted

    def rank(j: Judgement) -> tuple[int, int]:
        return (round((j.criterion if j.criterion is not None else 0.0) / TIE),
                -DEFAULT_ORDER.index(j.model))

    return max(fitted, key=rank), fitted


def bootstrap_skill(model: str, annotators: Sequence[Annotator], ref: np.ndarray,
                    rounds: int = 20, seed: int = 0) -> np.ndarray:
    """Standard deviation [J] of each annotator's estimated balanced accuracy over
    `rounds` bootstrap resamples of `ref` (how stable the skill estimates are)."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds):
        sample = rng.choice(ref, size=len(ref), replace=True)
        j = fit(model, annotators, sample, seed)
        draws.append(j.skill)
    return np.std(draws, axis=0)

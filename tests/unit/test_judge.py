"""The label-free judge, self-training helpers and per-job decisions on synthetic annotators
whose true accuracy is known (no model, no teacher)."""

import numpy as np
import pytest

from worker.distill import decisions
from worker.distill import judge as jd
from worker.distill import self_training as st


def _scores_to_probs(score: np.ndarray) -> np.ndarray:
    """Binary [N] score -> [N, 2] distribution (class 0 first)."""
    p = 1 / (1 + np.exp(-score))
    return np.stack([p, 1 - p], axis=1)


def _world(n=1500, prior=0.7, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) >= prior).astype(int)  # class 0 with probability `prior`
    sign = np.where(truth == 0, 1.0, -1.0)
    return rng, truth, sign


def test_correlated_prompts_do_not_outvote_an_independent_labeler():
    rng, truth, sign = _world()
    shared = rng.normal(0, 2.0, len(truth))  # the teacher's own error, common to its prompts
    teacher = [_scores_to_probs(0.6 * sign + shared + rng.normal(0, 0.3, len(truth)))
               for _ in range(3)]
    embedding = _scores_to_probs(1.5 * sign + rng.normal(0, 1.0, len(truth)))
    ann = [jd.Annotator(f"prompt-{i}", "teacher", p) for i, p in enumerate(teacher)]
    ann.append(jd.Annotator("embedding", "embedding", embedding))
    ref = np.arange(len(truth))
    weighted = jd.fit("weighted", ann, ref)
    naive = np.mean([a.probs for a in ann], axis=0)  # every prompt one vote
    acc = lambda p: (p.argmax(1) == truth).mean()  # noqa: E731
    assert acc(weighted.posterior) > acc(naive) + 0.05
    # The independent labeler is estimated as the better annotator.
    assert weighted.skill[-1] > weighted.skill[:3].max()


def test_class_balance_matching_moves_a_biased_threshold():
    rng, truth, sign = _world(prior=0.6)
    biased = _scores_to_probs(1.5 * sign + rng.normal(0, 1, len(truth)) - 2.5)
    assert (biased.argmax(1) == 1).mean() > 0.8  # it says class 1 to most texts
    matched = jd.match_prior(biased, np.array([0.6, 0.4]), np.arange(len(truth)))
    assert matched[:, 0].mean() == pytest.approx(0.6, abs=0.01)
    assert (matched.argmax(1) == truth).mean() > (biased.argmax(1) == truth).mean() + 0.2


@pytest.mark.parametrize("model", jd.LABEL_MODELS)
def test_every_label_model_is_about_as_good_as_its_best_annotator(model):
    rng, truth, sign = _world(seed=3)
    strengths = [1.2, 0.8, 0.6]
    ann = [jd.Annotator(f"a{i}", f"s{i}",
                        _scores_to_probs(s * sign + rng.normal(0, 1, len(truth))))
           for i, s in enumerate(strengths)]
    j = jd.fit(model, ann, np.arange(len(truth)))
    best = max((a.probs.argmax(1) == truth).mean() for a in ann)
    mean = np.mean([(a.probs.argmax(1) == truth).mean() for a in ann])
    assert (j.posterior.argmax(1) == truth).mean() >= max(mean, best - 0.03)
    # The prior estimate leans the right way (soft, weak annotators pull it towards 1/2).
    assert 0.5 < j.prior[0] <= 0.75
    assert j.skill[0] > j.skill[2]  # the strongest annotator is estimated the strongest


def test_the_criterion_prefers_the_label_model_closer_to_the_truth():
    rng, truth, sign = _world(seed=5)
    ann = [jd.Annotator("a", "teacher", _scores_to_probs(1.0 * sign + rng.normal(0, 1, 1500))),
           jd.Annotator("b", "embedding", _scores_to_probs(1.0 * sign + rng.normal(0, 1, 1500))),
           jd.Annotator("c", "student", _scores_to_probs(1.0 * sign + rng.normal(0, 1, 1500)))]
    ref = np.arange(1500)
    good = jd.agreement(_scores_to_probs(sign), ann[1].probs, ref)
    noisy = jd.agreement(_scores_to_probs(sign + rng.normal(0, 3, 1500)), ann[1].probs, ref)
    assert good > noisy  # a posterior nearer the truth agrees more with an independent source
    chosen, fitted = jd.judge(ann, ref)
    assert {f.model for f in fitted} == set(jd.LABEL_MODELS)
    assert all(f.criterion is not None and set(f.per_source) == {"teacher", "embedding",
                                                                   "student"} for f in fitted)
    assert chosen.criterion == max(f.criterion for f in fitted) or \
        max(f.criterion for f in fitted) - chosen.criterion < jd.TIE


def test_one_source_ties_go_to_the_default_order_and_the_choice_can_be_forced():
    rng, truth, sign = _world(seed=6)
    ann = [jd.Annotator("a", "teacher", _scores_to_probs(sign + rng.normal(0, 1, 1500)))]
    chosen, fitted = jd.judge(ann, np.arange(1500))
    assert all(f.criterion is None for f in fitted) and chosen.model == jd.DEFAULT_ORDER[0]
    forced, _ = jd.judge(ann, np.arange(1500), choose="dawid_skene")
    assert forced.model == "dawid_skene"
    with pytest.raises(ValueError):
        jd.fit("majority", ann, np.arange(1500))


def test_bootstrap_spread_shrinks_with_more_texts():
    rng, truth, sign = _world(n=2000, seed=7)
    ann = [jd.Annotator("a", "teacher", _scores_to_probs(sign + rng.normal(0, 1, 2000))),
           jd.Annotator("b", "embedding", _scores_to_probs(sign + rng.normal(0, 1, 2000)))]
    small = jd.bootstrap_skill("weighted", ann, np.arange(100), rounds=20)
    large = jd.bootstrap_skill("weighted", ann, np.arange(2000), rounds=20)
    assert (large < small).all()


def test_cross_fitted_answers_come_from_heads_that_never_saw_the_text():
    rng = np.random.default_rng(8)
    n = 200
    features = rng.normal(size=(n, 5))
    targets = np.eye(2)[rng.integers(0, 2, n)]  # random labels: nothing to learn
    oof = st.cross_fitted(features, targets, np.arange(n), seed=0)
    # In-sample a flexible head would fit random labels; out of fold it is at chance.
    assert abs((oof.argmax(1) == targets.argmax(1)).mean() - 0.5) < 0.12
    # A real signal is learned out of fold.
    signal = np.eye(2)[(features[:, 0] > 0).astype(int)]
    oof = st.cross_fitted(features, signal, np.arange(n), seed=0)
    assert (oof.argmax(1) == signal.argmax(1)).mean() > 0.9
    # One class only: every text gets it, no crash.
    one = st.cross_fitted(features, np.tile([1.0, 0.0], (n, 1)), np.arange(n), seed=0)
    assert (one[:, 0] == 1).all()


def test_a_round_is_judged_against_the_noise_of_its_own_agreement_change():
    rng, truth, sign = _world(n=500, seed=13)
    ref = np.arange(len(truth))
    reference = [_scores_to_probs(1.5 * sign + rng.normal(0, 1, len(truth)))]
    old_score = 1.2 * sign + rng.normal(0, 1, len(truth))
    old = [_scores_to_probs(old_score)]
    # a round that drifts to its own mistakes: clearly below the noise, so it is discarded
    worse = [_scores_to_probs(0.3 * sign + rng.normal(0, 1, len(truth)))]
    change, se = st.agreement_change(reference, old, worse, ref, seed=0)
    assert change < -se and se > 0
    # the same student: no change and no noise, kept
    assert st.agreement_change(reference, old, old, ref, seed=0) == (0.0, 0.0)
    # the noise is measured, not assumed: it shrinks with the corpus
    jitter = [_scores_to_probs(old_score + rng.normal(0, 0.5, len(truth)))]
    _, se_small = st.agreement_change(reference, old, jitter, ref[:100], seed=0)
    _, se_large = st.agreement_change(reference, old, jitter, ref, seed=0)
    assert se_large < se_small
    # a better round
    better = [_scores_to_probs(2.5 * sign + rng.normal(0, 1, len(truth)))]
    change, se = st.agreement_change(reference, old, better, ref, seed=0)
    assert change > se


def test_representations_pay_only_when_the_teacher_states_carry_more():
    rng = np.random.default_rng(9)
    n = 400
    y = rng.integers(0, 2, n)
    targets = np.eye(2)[y]
    informative = np.c_[y + rng.normal(0, 0.3, n), rng.normal(size=(n, 7))]
    noise = rng.normal(size=(n, 8))
    conf = np.ones(n)
    rows = np.arange(n)
    pays, why = decisions.representations_pay(informative, noise, targets, rows, conf, 0)
    assert pays and why["teacher_probe_accuracy"] > why["student_probe_accuracy"]
    pays, why = decisions.representations_pay(noise, informative, targets, rows, conf, 0)
    assert not pays
    assert decisions.representations_pay(None, noise, targets, rows, conf, 0)[0] is False


def test_the_easy_phase_pays_when_confident_texts_are_cleaner():
    rng = np.random.default_rng(10)
    n = 400
    truth = rng.integers(0, 2, n)
    conf = rng.random(n)
    posterior = np.eye(2)[truth] * 0.8 + 0.1
    # noisy labels (right on confident texts, mostly wrong on the rest): a clean easy half
    said = np.where(conf > 0.5, truth, np.where(rng.random(n) < 0.6, 1 - truth, truth))
    pays, why = decisions.easy_phase_pays(posterior, [np.eye(2)[said]], np.arange(n), conf, 0.5)
    assert pays and why["gain"] > 0.3 and why["overall"] < decisions.CLEAN
    # labels clean overall: a curriculum would only delay training on good texts
    said = np.where(conf > 0.5, truth, np.where(rng.random(n) < 0.1, 1 - truth, truth))
    pays, why = decisions.easy_phase_pays(posterior, [np.eye(2)[said]], np.arange(n), conf, 0.5)
    assert not pays and why["gain"] >= decisions.EASY_GAIN - 0.1
    # equally noisy everywhere: no easy half
    said = np.where(rng.random(n) > 0.3, truth, 1 - truth)
    pays, _ = decisions.easy_phase_pays(posterior, [np.eye(2)[said]], np.arange(n), conf, 0.5)
    assert not pays


def test_the_easy_share_keeps_every_class_the_judge_uses():
    # the minority class is the less confident one: a global cut would leave it out
    rng = np.random.default_rng(12)
    n = 500
    minority = rng.random(n) < 0.15
    posterior = np.where(minority[:, None], [0.3, 0.7], [0.95, 0.05])
    conf = np.abs(posterior[:, 0] - posterior[:, 1]) + rng.random(n) * 0.01
    rows = np.arange(0, n, 2)  # a training split
    easy = decisions.easy_share(rows, posterior, conf, 0.5)
    assert set(easy) <= set(rows)
    share = minority[easy].mean()
    assert abs(share - minority[rows].mean()) < 0.02
    # within each class the most confident texts are the ones kept
    for cls in (True, False):
        members = rows[minority[rows] == cls]
        kept = np.intersect1d(members, easy)
        assert conf[kept].min() >= conf[np.setdiff1d(members, kept)].max()
    # multi-label: one cut over all texts
    easy = decisions.easy_share(rows, posterior, conf, 0.5, multi_label=True)
    assert not minority[easy].any()


def test_a_judge_that_finds_no_annotator_above_chance_ends_the_job():
    from worker.distill.adaptive import Adaptive

    rng, truth, sign = _world(n=400, seed=11)
    noise = [jd.Annotator("prompt", "teacher", _scores_to_probs(rng.normal(0, 1, 400))),
             jd.Annotator("embedding", "embedding", _scores_to_probs(rng.normal(0, 1, 400)))]
    ref = np.arange(400)
    chosen, _ = jd.judge(noise, ref)
    spread = jd.bootstrap_skill(chosen.model, noise, ref)
    with pytest.raises(jd.JudgeError) as err:
        Adaptive._check_signal([], noise, chosen, spread, {"spread": {}}, 2, 400)
    assert err.value.code == "annotators_at_chance" and "skill_near_chance" in err.value.message
    # Too few texts to tell: no verdict (the run's warnings speak instead).
    Adaptive._check_signal([], noise, chosen, spread, {"spread": {}}, 2, 50)
    # Two weak but real signals vouch for each other. (One real signal beside pure noise
    # cannot be told from chance: nothing independent agrees with it.)
    signal = [jd.Annotator("prompt", "teacher",
                           _scores_to_probs(0.5 * sign + rng.normal(0, 1, 400))),
              jd.Annotator("embedding", "embedding",
                           _scores_to_probs(0.5 * sign + rng.normal(0, 1, 400)))]
    chosen, _ = jd.judge(signal, ref)
    Adaptive._check_signal([], signal, chosen, jd.bootstrap_skill(chosen.model, signal, ref),
                           {"spread": {}}, 2, 400)

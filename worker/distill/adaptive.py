"""The adaptive strategy (DESIGN.md 5): adaptive prompts in, progressive phases out.

Annotation, per sub-question (the label set, or each label's yes/no for multi-label):
1. every candidate prompt scores a probe sample; each is calibrated on content-free inputs;
2. a Dawid-Skene label model over all candidates' probe answers (and the extra labelers')
   estimates each one's balanced accuracy without labels; the best `max_prompts` are kept;
3. kept prompts score every text; the soft label is the mixture of kept prompts and extra
   labelers weighted by estimated accuracy above chance;
4. uncertain or disputed texts are re-asked with solved examples retrieved from confidently
   labeled neighbours.
Distillation: align -> easy -> full -> refine (see `schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.distill import decisions
from worker.distill import judge as jd
from worker.distill import label_model as lm
from worker.distill.annotate import annotate_each, option_probs
from worker.distill.config import EngineConfig, TeacherConfig
from worker.distill.phases import Phase
from worker.distill.prompts import Prompt, few_shot, prompt_pool
from worker.distill.strategy_base import Annotation, Context
from worker.distill.teachers import TeacherError

# Settings with a reason live in the config (worker/distill/config.py: teacher.probe_size,
# prompt_min_skill, bootstrap_rounds, min_skill, min_skill_texts, reprompt_mix, demo_share,
# demo_chars; distillation.align_weight, min_text_weight, replay_ratio). This is a fact:
MIN_DS_ANNOTATORS = 3  # Dawid-Skene is not identifiable with fewer annotators


@dataclass
class Judged:
    prompt: Prompt
    content_free: np.ndarray
    calibrated: bool
    mi: float
    probe_probs: np.ndarray
    skill: float = 0.0  # estimated balanced accuracy above chance

@dataclass
class GroupResult:
    probs: np.ndarray  # [N, K]
    hidden: np.ndarray | None
    best: Judged
    few_shot_prompt: Prompt  # the best-judged question prompt (channel prompts take no shots)
    dispute: np.ndarray  # [N] bool
    record: list[dict[str, Any]]
    label_model: str
    prior: list[float]
    judge: dict[str, Any]  # every label model's criterion and prior, which one was chosen
    annotators: list[jd.Annotator]  # what the judge combined (self-training adds the student)


def confidence(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    """Per text, 0 (no idea) .. 1 (certain): top probability above chance, or label margins."""
    if multi_label:
        return np.abs(2 * probs - 1).mean(1)
    k = probs.shape[1]
    return (probs.max(1) - 1 / k) / (1 - 1 / k)


class Adaptive:
    """Adaptive prompting + progressive distillation (the default strategy)."""

    name = "adaptive"
    self_trains = True  # the student joins the label model (worker/distill/self_training.py)

    # ------------------------------------------------------------------ annotation
    def annotate(self, ctx: Context, texts: list[str], n_corpus: int) -> Annotation:
        cfg, task = ctx.cfg, ctx.cfg.task
        rng = np.random.default_rng(cfg.distillation.seed)
        probe = np.sort(rng.choice(n_corpus, size=min(cfg.teacher.probe_size, n_corpus),
                                   replace=False))
        embeddings = ctx.embedder.embed(texts) if ctx.embedder else None
        groups = prompt_pool(task, cfg.teacher.prompts)
        extras: list[tuple[str, np.ndarray]] = []
        if (ctx.embedder and embeddings is not None and "embedding" in cfg.teacher.extra_labelers
                and not task.multi_label):
            extras.append(("embedding", ctx.embedder.label(task, embeddings, n_corpus)))
        results = [self._group(ctx, group, texts, n_corpus, probe, extras if g == 0 else [],
                               want_hidden=g == 0) for g, group in enumerate(groups)]
        if task.multi_label:
            probs = np.stack([r.probs[:, 0] for r in results], axis=1)
        else:
            probs = results[0].probs
        reprompted = np.zeros(len(texts), dtype=bool)
        ref = np.arange(n_corpus)
        if cfg.teacher.reprompt and cfg.teacher.demos and embeddings is not None:
            ctx.stats.stage = "reprompt"
            for g, res in enumerate(results):
                chosen, fresh = self._reprompt(ctx, res, res.probs, texts, n_corpus, embeddings)
                if not len(chosen):
                    continue
                # The few-shot answer improves the teacher's own answer on those texts; the
                # judge then combines it with the other annotators as before.
                first, mix = res.annotators[0], cfg.teacher.reprompt_mix
                first.probs[chosen] = (1 - mix) * first.probs[chosen] + mix * fresh
                res.probs = jd.fit(res.label_model, res.annotators, ref,
                                   cfg.distillation.seed).posterior
                reprompted[chosen] = True
                if task.multi_label:
                    probs[:, g] = res.probs[:, 0]
                else:
                    probs = res.probs
            ctx.stats.stage = "label"
        best = results[0].few_shot_prompt
        record = {
            "prompts": [p for r in results for p in r.record],
            "best_prompt": {"name": best.name, "template": best.template,
                            "options": list(best.options), "label": best.label},
            "pool_size": sum(len(g) for g in groups), "probe_size": int(len(probe)),
            "label_model": sorted({r.label_model for r in results}),
            "estimated_prior": [r.prior for r in results],
            "extra_labelers": [name for name, _ in extras],
            "judge": [r.judge for r in results],
            "annotators": [[{"name": a.name, "source": a.source,
                             "informs_prior": a.informs_prior} for a in r.annotators]
                           for r in results],
            "reprompted": int(reprompted.sum()),
            "reprompted_corpus": int(reprompted[:n_corpus].sum()),
        }
        extra = {"reprompted": reprompted.astype(np.float32)}
        for g, res in enumerate(results):  # what the judge combined, for self-training
            for i, a in enumerate(res.annotators):
                extra[f"annotator.{g}.{i}"] = a.probs.astype(np.float32)
        if embeddings is not None:
            extra["embeddings"] = embeddings
        return Annotation(probs, results[0].hidden, record, extra)

    def _judge(self, ctx: Context, prompt: Prompt, probe_texts: list[str],
               want_hidden: bool = False) -> Judged:
        # With hidden states the kept prompt's probe texts need no second pass later.
        raw = lm.normalize(option_probs(ctx.scores(prompt, probe_texts, want_hidden)))
        cf = lm.normalize(ctx.probs(prompt, list(lm.CONTENT_FREE))).mean(0)
        cal = lm.calibrate(raw, cf)
        mi_raw, mi_cal = lm.mutual_information(raw), lm.mutual_information(cal)
        use_cal = mi_cal >= mi_raw
        return Judged(prompt, cf, use_cal, max(mi_raw, mi_cal), cal if use_cal else raw)

    def _group(self, ctx: Context, group: list[Prompt], texts: list[str], n_corpus: int,
               probe: np.ndarray, extras: list[tuple[str, np.ndarray]],
               want_hidden: bool) -> GroupResult:
        """Judge every prompt on the probe, keep the best, label every text with the judge.

        Successive halving (Jamieson & Talwalkar, 2016): with more candidates than
        `teacher.probe_survivors`, every prompt is first judged on half the probe and only
        the best survivors on all of it; the others keep their half-probe scores and rank
        below the survivors."""
        cfg = ctx.cfg
        survivors = cfg.teacher.probe_survivors
        first = probe[::2] if 0 < survivors < len(group) and len(probe) >= 16 else probe
        judged, skipped = [], []
        ctx.stats.stage = "probe"
        for i, prompt in enumerate(group):
            try:
                judged.append(self._judge(ctx, prompt, [texts[t] for t in first], want_hidden))
            except TeacherError as exc:
                if i == 0 or prompt.name.startswith("user-") or exc.code == "teacher_unavailable":
                    raise  # the task's own words and the user's prompts must work; a failing
                    # server fails every prompt alike
                skipped.append({"name": prompt.name, "id": prompt.id, "kept": False,
                                "weight": 0.0, "skipped": exc.message})
        k = judged[0].probe_probs.shape[1]
        ranking = self._rank_prompts(judged, [p[first] for _, p in extras], k,
                                     cfg.distillation.seed, cfg.teacher.bootstrap_rounds)
        probe_texts_of = {j.prompt.name: len(first) for j in judged}
        judged.sort(key=lambda j: -j.skill)
        if len(first) < len(probe):
            rest = judged[survivors:]
            judged = [self._judge(ctx, j.prompt, [texts[t] for t in probe], want_hidden)
                      for j in judged[:survivors]]
            final = self._rank_prompts(judged, [p[probe] for _, p in extras], k,
                                       cfg.distillation.seed, cfg.teacher.bootstrap_rounds)
            ranking = {**final, "spread": {**ranking["spread"], **final["spread"]}}
            probe_texts_of.update({j.prompt.name: len(probe) for j in judged})
            judged.sort(key=lambda j: -j.skill)
            judged += rest  # below every survivor, in their first-round order
        useful = [j for j in judged if j.skill > cfg.teacher.prompt_min_skill]
        kept = useful[: cfg.teacher.max_prompts] or judged[:1]
        annotators, hidden = [], None
        ctx.stats.stage = "label"
        for i, j in enumerate(kept):
            scores = ctx.scores(j.prompt, texts, want_hidden and i == 0)
            p = lm.normalize(np.exp(scores.logprobs - scores.logprobs.max(1, keepdims=True)))
            annotators.append(jd.Annotator(j.prompt.name, "teacher",
                                           lm.calibrate(p, j.content_free) if j.calibrated
                                           else p))
            hidden = scores.hidden if i == 0 else hidden
        # Extra labelers standardise their scores over the corpus: no prior in their answers.
        annotators += [jd.Annotator(name, name, p, informs_prior=False) for name, p in extras]
        ref = np.arange(n_corpus)
        chosen, fitted = jd.judge(annotators, ref, choose=cfg.teacher.label_model,
                                  seed=cfg.distillation.seed)
        spread = jd.bootstrap_skill(chosen.model, annotators, ref,
                                    seed=cfg.distillation.seed)
        self._check_signal(judged, annotators, chosen, spread, ranking, k, n_corpus,
                           cfg.teacher.min_skill, cfg.teacher.min_skill_texts)
        weights = np.clip(chosen.skill - 1.0 / k, 0.0, None)
        weights = weights / weights.sum() if weights.sum() > 0 else weights
        matched = [jd.match_prior(a.probs, chosen.prior, ref) for a in annotators]
        dispute = np.zeros(len(texts), dtype=bool)
        for m in matched:
            dispute |= m.argmax(1) != chosen.posterior.argmax(1)
        names = [a.name for a in annotators]
        record: list[dict[str, Any]] = list(skipped)
        for j in judged:
            entry: dict[str, Any] = {"name": j.prompt.name, "id": j.prompt.id,
                                     "template": j.prompt.template, "label": j.prompt.label,
                                     "options": list(j.prompt.options),
                                     "kind": j.prompt.kind, "prefixes": list(j.prompt.prefixes),
                                     "mutual_information": round(j.mi, 5),
                                     "probe_agreement": round(j.skill, 4),
                                     "probe_texts": probe_texts_of[j.prompt.name],
                                     "probe_agreement_spread": round(
                                         ranking["spread"].get(j.prompt.name, 0.0), 4),
                                     "calibrated": j.calibrated,
                                     "content_free": [round(float(x), 4) for x in j.content_free],
                                     "kept": j.prompt.name in names, "weight": 0.0}
            if j.prompt.name in names:
                at = names.index(j.prompt.name)
                entry["estimated_balanced_accuracy"] = round(float(chosen.skill[at]), 4)
                entry["skill_spread"] = round(float(spread[at]), 4)
                entry["weight"] = round(float(weights[at]), 4)
            record.append(entry)
        for at, (name, _) in enumerate(extras, start=len(kept)):
            record.append({"name": name, "id": name, "template": None, "label": None,
                           "kind": "labeler", "kept": True,
                           "estimated_balanced_accuracy": round(float(chosen.skill[at]), 4),
                           "skill_spread": round(float(spread[at]), 4),
                           "weight": round(float(weights[at]), 4)})
        questions = [j.prompt for j in judged if j.prompt.kind == "choice"] or [group[0]]
        judge_record = {
            "chosen": chosen.model, "requested": cfg.teacher.label_model,
            "ranked_prompts_by": ranking["by"], "probe_size": int(len(probe)),
            "fitted_on": int(n_corpus),
            "candidates": [{"model": f.model, "criterion": (None if f.criterion is None
                                                            else round(f.criterion, 4)),
                            "per_source": f.per_source,
                            "prior": [round(float(x), 4) for x in f.prior]}
                           for f in fitted],
        }
        return GroupResult(chosen.posterior, hidden, kept[0], questions[0], dispute, record,
                           chosen.model, [round(float(x), 4) for x in chosen.prior],
                           judge_record, annotators)

    @staticmethod
    def _check_signal(judged: list[Judged], annotators: list[jd.Annotator],
                      chosen: jd.Judgement, spread: np.ndarray, ranking: dict[str, Any],
                      k: int, n_corpus: int, min_skill: float = TeacherConfig.min_skill,
                      min_texts: int = TeacherConfig.min_skill_texts) -> None:
        """End the job when no annotator is clearly above chance: a student trained on such
        labels would be near random, and registering it would hide that.

        Raises:
            JudgeError: `annotators_at_chance`, when the corpus is large enough to tell
                (`min_texts`, teacher.min_skill_texts) and even the best annotator's
                estimate plus two bootstrap spreads is within `min_skill`
                (teacher.min_skill) of chance. With independent sources the estimate
                is each annotator's balanced accuracy against the others; with one source,
                the prompts' Dawid-Skene estimate on the probe.
        """
        if n_corpus < min_texts or min_skill <= 0:
            return  # too few texts to tell (the run's warnings say so), or switched off
        if len({a.source for a in annotators}) >= 2:
            upper = chosen.skill - 1.0 / k + 2 * spread
            names = [a.name for a in annotators]
        else:
            upper = np.array([j.skill + 2 * ranking["spread"].get(j.prompt.name, 0.0)
                              for j in judged])
            names = [j.prompt.name for j in judged]
        best = int(np.argmax(upper))
        if upper[best] < min_skill:
            raise jd.JudgeError(
                "annotators_at_chance",
                f"warning skill_near_chance: no annotator is clearly better than chance: none "
                f"agrees with the others beyond it (the best, {names[best]!r}, is at most "
                f"{upper[best]:+.3f} balanced accuracy above chance, teacher.min_skill "
                f"{min_skill} needed); a "
                f"student trained on these labels would "
                f"be near random, so none was trained. Describe the labels more fully, add "
                f"prompts (teacher.prompts) or use a stronger teacher.")

    @staticmethod
    def _rank_prompts(judged: list[Judged], extras: list[np.ndarray], k: int,
                      seed: int, rounds: int = TeacherConfig.bootstrap_rounds
                      ) -> dict[str, Any]:
        """Score every candidate prompt on the probe (sets `Judged.skill`).

        With an independent labeler (the embedding labeler), a prompt's score is its rank
        agreement with that labeler: when their errors are independent given the true label,
        the agreement grows with the prompt's own separation of the classes, and prompts of
        one teacher cannot vouch for each other. Without one, a Dawid-Skene model over the
        prompts' votes estimates each one's balanced accuracy above chance.
        Returns {"by": how, "spread": {prompt name: std over `rounds` bootstrap resamples}}.
        """
        rng = np.random.default_rng(seed)
        n = len(judged[0].probe_probs)
        draws = [rng.integers(0, n, n) for _ in range(rounds)]
        if extras:
            other = lm.normalize(np.mean(extras, axis=0))
            every = np.arange(n)
            for j in judged:
                j.skill = jd.agreement(j.probe_probs, other, every)
            spread = {j.prompt.name: float(np.std([jd.agreement(j.probe_probs, other, d)
                                                   for d in draws])) for j in judged}
            return {"by": "agreement with the independent labelers on the probe",
                    "spread": spread}
        annotators = [j.probe_probs for j in judged]
        skill = Adaptive._estimate_skill(annotators, k)
        for j, s_ in zip(judged, skill, strict=True):
            j.skill = float(s_)
        boot = [Adaptive._estimate_skill([a[d] for a in annotators], k) for d in draws]
        spread = {j.prompt.name: float(s_) for j, s_ in zip(judged, np.std(boot, axis=0),
                                                             strict=True)}
        return {"by": "dawid_skene on the probe's votes", "spread": spread}

    @staticmethod
    def _estimate_skill(annotators: list[np.ndarray], k: int) -> np.ndarray:
        """Balanced accuracy above chance of each annotator, from a full-confusion
        Dawid-Skene model over their probe answers (MI-weighted mixture as the start)."""
        if len(annotators) < MIN_DS_ANNOTATORS:
            return np.asarray([lm.mutual_information(p) for p in annotators])
        votes = np.stack([p.argmax(1) for p in annotators], axis=1)
        mi = np.clip([lm.mutual_information(p) for p in annotators], 1e-6, None)
        init = lm.combine(annotators, np.asarray(mi) / np.sum(mi))
        model = lm.dawid_skene(votes, k, init, one_coin=False)
        balanced = np.diagonal(model.confusion, axis1=1, axis2=2).mean(1)
        return balanced - 1 / k

    def _reprompt(self, ctx: Context, res: GroupResult, probs: np.ndarray, texts: list[str],
                  n_corpus: int, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Re-ask the least certain / disputed texts with retrieved examples; returns (the
        re-asked indices, their few-shot answers [len, K])."""
        t = ctx.cfg.teacher
        conf = probs.max(1)
        # Corpus texts only: the student trains on nothing else; the eval texts' teacher
        # labels only measure the teacher, and re-asking them would cost passes for that.
        uncertain = np.where((conf[:n_corpus] < t.reprompt_confidence)
                             | res.dispute[:n_corpus])[0]
        chosen = uncertain[np.argsort(conf[uncertain], kind="stable")]
        chosen = chosen[: int(t.reprompt_fraction * n_corpus)]
        if len(chosen) == 0:
            return chosen, np.zeros((0, probs.shape[1]))
        fresh = self.ask_with_examples(ctx, res.few_shot_prompt, probs, chosen, texts,
                                       n_corpus, embeddings)
        return chosen, fresh

    def ask_with_examples(self, ctx: Context, prompt: Prompt, probs: np.ndarray,
                          chosen: np.ndarray, texts: list[str], n_corpus: int,
                          embeddings: np.ndarray) -> np.ndarray:
        """Few-shot answers [len(chosen), K] with class-balanced nearest confident examples."""
        t = ctx.cfg.teacher
        k = probs.shape[1]
        conf = probs[:n_corpus].max(1)
        pool = np.where(conf >= np.quantile(conf, 1 - t.demo_share))[0]
        pool = np.setdiff1d(pool, chosen)
        pool_label = probs[pool].argmax(1)
        per_class = max(1, -(-t.demos // k))
        sims = embeddings[chosen] @ embeddings[pool].T
        prompts = []
        for row in range(len(chosen)):
            demos: list[tuple[float, int]] = []
            for c in range(k):
                members = np.where(pool_label == c)[0]
                best = members[np.argsort(-sims[row, members])][:per_class]
                demos += [(float(sims[row, m]), m) for m in best]
            demos = sorted(demos)[-t.demos:]  # most similar last, next to the question
            shots = [(texts[pool[m]][:t.demo_chars], int(pool_label[m])) for _, m in demos]
            prompts.append(few_shot(prompt, shots))
        lp = annotate_each(ctx.teacher, prompts, [texts[i] for i in chosen], cache=ctx.cache,
                           batch_size=max(1, t.batch_size // 2),
                           max_text_tokens=t.max_text_tokens, stats=ctx.stats,
                           on_texts=ctx.on_texts)
        return lm.normalize(np.exp(lp - lp.max(1, keepdims=True)))

    # ------------------------------------------------------------------ distillation
    def schedule(self, cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray) -> list[Phase]:
        """align (representations) -> easy (confident texts, T) -> full (all, weighted,
        T annealed to 1, + representations) -> refine (disagreements re-asked).

        "auto" settings are decided here without labels (worker/distill/decisions.py); the
        decisions and their evidence go to `ann.record["decisions"]`."""
        d, multi = cfg.distillation, cfg.task.multi_label
        loss = "soft_bce" if multi else "soft_ce"
        conf = confidence(ann.probs, multi)
        weights = d.min_text_weight + (1 - d.min_text_weight) * conf
        rep, rep_why = self._decide_representations(cfg, ann, train_idx, conf)
        easy_on, easy_why = self._decide_progressive(cfg, ann, train_idx, conf)
        ann.record["decisions"] = {
            "representations": {"setting": d.representations, "used": rep, **rep_why},
            "progressive": {"setting": d.progressive, "used": easy_on, **easy_why}}
        align = d.align_weight if rep else 0.0
        full = Phase("full", train_idx, d.epochs, loss, (d.temperature, 1.0), weights,
                     align_weight=align, align_loss=d.align_loss)
        if not easy_on:
            return ([Phase("align", train_idx, 1, None, align_weight=1.0,
                           align_loss=d.align_loss)] if rep else []) + [full]
        phases = []
        if rep:
            phases.append(Phase("align", train_idx, 1, None, align_weight=1.0,
                                align_loss=d.align_loss))
        easy = decisions.easy_share(train_idx, ann.probs, conf, d.easy_fraction, multi)
        phases.append(Phase("easy", easy, 1, loss, (d.temperature, d.temperature)))
        phases.append(full)
        phases.append(Phase("refine", train_idx, 1, loss, (1.0, 1.0), refine=True))
        return phases

    @staticmethod
    def _decide_representations(cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray,
                                conf: np.ndarray) -> tuple[bool, dict[str, Any]]:
        setting = cfg.distillation.representations
        if ann.hidden is None:
            return False, {"reason": "the teacher gives no hidden states"}
        if setting != "auto":
            return bool(setting), {"reason": "set in the job spec"}
        targets = ann.probs
        if cfg.task.multi_label:  # the probe learns the most likely label of each text
            targets = ann.probs / np.clip(ann.probs.sum(1, keepdims=True), 1e-9, None)
        return decisions.representations_pay(ann.hidden, ann.extra.get("embeddings"),
                                             targets, train_idx, conf,
                                             cfg.distillation.seed)

    @staticmethod
    def _decide_progressive(cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray,
                            conf: np.ndarray) -> tuple[bool, dict[str, Any]]:
        d = cfg.distillation
        if d.progressive != "auto":
            return bool(d.progressive), {"reason": "set in the job spec"}
        if cfg.task.multi_label:  # per-label yes/no: only the judge's confidence to go by
            return decisions.easy_phase_pays(ann.probs, [], train_idx, conf, d.easy_fraction,
                                             multi_label=True)
        annotators = [np.asarray(v) for k, v in ann.extra.items()
                      if k.startswith("annotator.0.")]
        return decisions.easy_phase_pays(ann.probs, annotators, train_idx, conf,
                                         d.easy_fraction)

    def refine(self, ctx: Context, ann: Annotation, train_idx: np.ndarray,
               student_probs: np.ndarray, texts: list[str], seed: int
               ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Re-ask the teacher where the student disagrees; return (indices to train on,
        updated targets over the corpus, counts for the log)."""
        multi = ctx.cfg.task.multi_label
        targets = ann.probs[: len(texts)].copy()
        teacher_dec = targets[train_idx] >= 0.5 if multi else targets[train_idx].argmax(1)
        student_dec = student_probs >= 0.5 if multi else student_probs.argmax(1)
        differ = (teacher_dec != student_dec)
        differ = differ.any(1) if multi else differ
        disagree = train_idx[differ]
        asked = 0
        embeddings = ann.extra.get("embeddings")
        t = ctx.cfg.teacher
        if t.reprompt and t.demos and embeddings is not None and not multi and len(disagree):
            done = ann.extra.get("reprompted", np.zeros(len(texts)))[: len(texts)] > 0
            todo = disagree[~done[disagree]][: int(t.reprompt_fraction * len(train_idx))]
            if len(todo):
                bp = ann.record["best_prompt"]
                best = Prompt(bp["name"], bp["template"], tuple(bp["options"]), bp["label"])
                fresh = self.ask_with_examples(ctx, best, targets, todo, texts, len(texts),
                                               embeddings[: len(texts)])
                targets[todo] = (1 - t.reprompt_mix) * targets[todo] + t.reprompt_mix * fresh
                asked = len(todo)
        rng = np.random.default_rng(seed)
        rest = np.setdiff1d(train_idx, disagree)
        ratio = ctx.cfg.distillation.replay_ratio
        replay = rng.choice(rest, size=min(len(rest), int(ratio * len(disagree)) or 1),
                            replace=False) if len(rest) else rest
        info = {"disagreements": int(len(disagree)), "reasked": asked, "replay": int(len(replay))}
        return np.concatenate([disagree, replay]), targets, info

    def expected_teacher_calls(self, cfg: EngineConfig, n_texts: int) -> int:
        t = cfg.teacher
        groups = len(cfg.task.labels) if cfg.task.multi_label else 1
        labels = len(cfg.task.labels)
        pool = 5 + 2 * labels + len(t.prompts) if not cfg.task.multi_label else 3 + len(t.prompts)
        probe = min(t.probe_size, n_texts)
        cf = len(lm.CONTENT_FREE)
        if 0 < t.probe_survivors < pool and probe >= 16:  # successive halving (see _group)
            # progress counts the survivors' whole second round, cache hits included
            first = (probe + 1) // 2
            judging = pool * (first + cf) + t.probe_survivors * (probe + cf)
        else:
            judging = pool * (probe + cf)
        few_shot = int(t.reprompt_fraction * n_texts * 3) if t.reprompt else 0
        return groups * (judging + t.max_prompts * n_texts + few_shot)

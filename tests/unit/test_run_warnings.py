"""Degenerate results are never silent: the engine's warnings, the registry's force rule,
and what the API, the card, the CLI and the dashboard show (issue 11, kind 6)."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from transformers import AutoTokenizer, LlamaForCausalLM

from app.core.db import session_scope
from app.models import Job
from app.models.base import new_id
from tailor_cli.render import comparison_table, warnings_panel
from tests.fixtures.tiny import corpus
from tests.fixtures.versions import register_tiny
from tests.integration.report import record_input
from worker.distill import warnings as rules
from worker.distill.config import EngineConfig
from worker.distill.engine import DistillData, run
from worker.distill.metrics import classification_report, dominant_decision, majority_baseline

BALANCED_EVAL = (corpus(8), ["crisis", "calm"] * 4)
WARNED = [{"code": "teacher_one_class",
           "message": "the teacher answers 'crisis' for 100% of 110 corpus texts"},
          {"code": "student_below_majority", "message": "no better than always answering 'calm'"}]
PATHS = ["engine run (tiny models)", "GET /jobs/{id}", "GET /models/{name}/versions/{v}",
         "model card", "PUT /models/{name}/aliases/{alias}", "/ui job and model pages",
         "tailor models show / jobs watch"]


@pytest.fixture(scope="module")
def one_class_teacher(tiny_models, tmp_path_factory) -> str:
    """The tiny teacher rewired to answer `crisis` whatever the text (as the issue's 110-text
    job's teacher did): one hidden dimension is held high for every token and only the
    `crisis` row of the output layer reads it."""
    out = tmp_path_factory.mktemp("one-class-teacher")
    model = LlamaForCausalLM.from_pretrained(tiny_models[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[0])
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 50.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("crisis"), 0] = 5.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def _cfg(teacher: str, student: str, strategy: str = "vanilla_kd", **teacher_opts
         ) -> EngineConfig:
    # One epoch, short texts: these runs check what the figures say, not how good they are.
    return EngineConfig.from_dict({
        "task": {"labels": [{"name": "crisis"}, {"name": "calm", "verbalizer": "none"}]},
        "teacher": {"model": teacher, "batch_size": 16, **teacher_opts},
        "student": {"model": student, "max_length": 16},
        "distillation": {"strategy": strategy, "epochs": 1, "batch_size": 16}})


def _codes(result) -> set[str]:
    return {w["code"] for w in result.warnings}


# ---------------------------------------------------------------- the engine, end to end
@pytest.mark.reliability
def test_a_one_class_teacher_run_registers_its_warnings(tmp_path, tiny_models,
                                                        one_class_teacher):
    data = DistillData(corpus(40), *BALANCED_EVAL)
    result = run(_cfg(one_class_teacher, tiny_models[1]), data, workdir=tmp_path / "w",
                 cache_dir=tmp_path / "c")
    assert result.metrics["teacher"]["label_distribution"] == {"crisis": 1.0, "calm": 0.0}
    assert {"teacher_one_class", "student_one_class", "student_below_majority",
            "teacher_below_majority"} <= _codes(result)
    by_code = {w["code"]: w["message"] for w in result.warnings}
    assert "'crisis' for 100% of 40 corpus texts" in by_code["teacher_one_class"]
    assert all(set(w) == {"code", "message"} for w in result.warnings)
    record_input("degenerate results", PATHS,
                 ["a teacher answering 'crisis' for all 40 corpus texts, balanced 8-text eval"],
                 ["warnings teacher_one_class, student_one_class, student_below_majority on "
                  "the run (then the job and version)"])


def test_a_teacher_that_separates_raises_no_one_class_warning(tmp_path, tiny_models):
    # The same corpus with the unmodified tiny teacher under the adaptive strategy: it splits
    # the texts (about 57/43), so the one-class rule must stay quiet.
    result = run(_cfg(*tiny_models, strategy="adaptive", reprompt=False, probe_size=16),
                 DistillData(corpus(40), *BALANCED_EVAL), workdir=tmp_path / "w",
                 cache_dir=tmp_path / "c")
    share = result.metrics["teacher"]["dominant_decision"]["share"]
    assert share < rules.ONE_CLASS_SHARE
    assert "teacher_one_class" not in _codes(result)


@pytest.mark.reliability
@pytest.mark.parametrize("texts, expected, absent", [
    (4, {"corpus_too_small", "holdout_too_small"}, set()),  # the "agreement 1.000"
    (12, {"corpus_too_small", "holdout_too_small"}, set()),
    (120, {"holdout_too_small"}, {"corpus_too_small"}),  # 102 train, 18 held out
])
def test_small_corpora_and_splits_are_flagged(tmp_path, tiny_models, texts, expected, absent):
    result = run(_cfg(*tiny_models), DistillData(corpus(texts)), workdir=tmp_path / "w",
                 cache_dir=tmp_path / "c")
    codes = _codes(result)
    assert expected <= codes and not absent & codes, result.warnings
    holdout = result.metrics["corpus"]["holdout"]
    message = next(w["message"] for w in result.warnings if w["code"] == "holdout_too_small")
    assert f"has {holdout} texts" in message
    assert "eval_set_too_small" not in codes  # no eval set, nothing to call too small
    record_input("degenerate results", PATHS, [f"a {texts}-text corpus"],
                 [f"{', '.join(sorted(expected))} raised; "
                  f"{', '.join(sorted(absent)) or 'nothing else'} not"])


# ---------------------------------------------------------------- the rules, one by one
@pytest.mark.parametrize("share, warned", [(1.0, True), (0.95, True), (0.94, False)])
def test_one_class_threshold(share, warned):
    dominant = {"decision": "crisis", "share": share, "texts": 100}
    assert (rules.one_class("student", dominant, "texts") is not None) is warned


def test_one_class_in_multi_label_counts_the_whole_label_set():
    probs = torch.tensor([[0.9, 0.1, 0.2]] * 19 + [[0.9, 0.8, 0.2]]).numpy()
    dominant = dominant_decision(probs, ["flood", "fire", "storm"], multi_label=True)
    assert dominant == {"decision": ["flood"], "share": 0.95, "texts": 20}
    nothing = dominant_decision(probs * 0, ["flood", "fire", "storm"], multi_label=True)
    warning = rules.one_class("teacher", nothing, "corpus texts")
    assert warning is not None and "answers no label for 100%" in warning.message


@pytest.mark.parametrize("prompts, options, warned", [
    ([{"kept": True, "estimated_balanced_accuracy": 0.51},
      {"kept": True, "estimated_balanced_accuracy": 0.53}], 2, True),
    ([{"kept": True, "estimated_balanced_accuracy": 0.51},
      {"kept": False, "estimated_balanced_accuracy": 0.90}], 2, True),  # only kept ones count
    ([{"kept": True, "estimated_balanced_accuracy": 0.62}], 2, False),
    ([{"kept": True, "estimated_balanced_accuracy": 0.36}], 3, True),  # chance is 1/3
    ([{"kept": True, "label": "flood", "estimated_balanced_accuracy": 0.80},
      {"kept": True, "label": "fire", "estimated_balanced_accuracy": 0.52}], 2, True),
    ([{"kept": True, "weight": 1.0}], 2, False),  # a baseline: nothing was estimated
])
def test_skill_near_chance(prompts, options, warned):
    warning = rules.skill_near_chance(prompts, options)
    assert (warning is not None) is warned
    if warning and any(p.get("label") for p in prompts):
        assert "'fire'" in warning.message and "'flood'" not in warning.message


@pytest.mark.parametrize("train, holdout, n_eval, expected", [
    (3, 1, 0, {"corpus_too_small", "holdout_too_small"}),
    (99, 29, 29, {"corpus_too_small", "holdout_too_small", "eval_set_too_small"}),
    (100, 30, 30, set()),
])
def test_small_split_thresholds(train, holdout, n_eval, expected):
    metrics = {"corpus": {"train": train, "holdout": holdout},
               "student": {"holdout_agreement": 1.0,
                           **({"eval": {"n": n_eval}} if n_eval else {})}}
    assert {w.code for w in rules.small_splits(metrics)} == expected


def test_majority_baseline_single_and_multi_label():
    gold = ["calm", "calm", "calm", "crisis"]
    assert majority_baseline(gold, ["crisis", "calm"], False) == {
        "decision": "calm", "accuracy": 0.75, "macro_f1": pytest.approx(0.4285714)}
    multi = [["flood"], ["flood"], [], ["fire", "flood"]]
    base = majority_baseline(multi, ["flood", "fire"], True)
    assert base["decision"] == ["flood"] and base["accuracy"] == 0.5
    assert base["macro_f1"] == pytest.approx((2 * 0.75 / 1.75 + 0.0) / 2)


@pytest.mark.parametrize("student_rows, warned", [
    ([[0, 1]] * 4, True),  # always "calm", the majority: no better
    ([[1, 0]] * 4, True),  # always the minority: worse on both
    ([[0, 1], [0, 1], [1, 0], [1, 0]], False),  # finds the rare class: macro-F1 is higher
    ([[0, 1], [0, 1], [0, 1], [1, 0]], False),  # all right
])
def test_below_majority(student_rows, warned):
    gold = ["calm", "calm", "calm", "crisis"]
    report = classification_report(torch.tensor(student_rows, dtype=torch.float).numpy(),
                                   gold, ["crisis", "calm"], False)
    assert (rules.below_majority("student", report) is not None) is warned


# ---------------------------------------------------------------- API, card, force
@pytest.mark.reliability
def test_a_warned_version_takes_an_alias_only_by_force(client, tiny_models):
    clean = register_tiny(tiny_models[1], seed=1)
    warned = register_tiny(tiny_models[1], seed=2, warnings=WARNED)
    assert client.put("/models/crisis/aliases/production", json={"version": clean}
                      ).status_code == 200
    refused = client.put("/models/crisis/aliases/production", json={"version": warned})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "version_has_warnings"
    assert error["details"] == {"warnings": WARNED}
    assert "teacher_one_class" in error["message"] and "force" in error["message"]
    assert client.get("/models").json()["models"][0]["aliases"] == {"production": clean}
    assert client.put("/models/crisis/aliases/canary", json={"version": warned, "force": "yes"}
                      ).status_code == 422  # force must be a real boolean
    assert client.put("/models/crisis/aliases/canary", json={"version": warned, "force": False}
                      ).json()["error"]["code"] == "version_has_warnings"
    moved = client.put("/models/crisis/aliases/production",
                       json={"version": warned, "force": True})
    assert moved.status_code == 200 and moved.json()["version"] == warned
    served = client.post("/classify", json={"model": "crisis@production", "texts": ["flood"]})
    assert served.json()["version"] == warned
    assert client.put("/models/crisis/aliases/production", json={"version": clean}
                      ).status_code == 200  # a clean version needs no force
    record_input("degenerate results", PATHS,
                 ["PUT alias onto a warned version: no force, force \"yes\", false, true"],
                 ["409 version_has_warnings (warnings in details, alias unmoved) without "
                  "force; 422 for a non-boolean force; 200 with force: true"])


def test_versions_and_cards_carry_the_warnings(client, tiny_models):
    clean = register_tiny(tiny_models[1], seed=1)
    warned = register_tiny(tiny_models[1], seed=2, warnings=WARNED)
    detail = client.get(f"/models/crisis/versions/{warned}").json()
    assert detail["warnings"] == WARNED
    assert client.get(f"/models/crisis/versions/{clean}").json()["warnings"] == []
    summary = {v["version"]: v["warnings"] for v in client.get("/models/crisis").json()[
        "versions"]}
    assert summary == {clean: [], warned: WARNED}
    card = client.get(f"/models/crisis/versions/{warned}/card").text
    assert card.index("## Warnings") < card.index("## Quality")
    assert "**teacher_one_class**" in card
    assert "## Warnings" not in client.get(f"/models/crisis/versions/{clean}/card").text


def _job(warnings: list[dict[str, str]]) -> str:
    job_id = new_id("job")
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state="succeeded", phase="register",
                   progress=1.0, spec={"name": "crisis"}, metrics=_METRICS, attempts=1,
                   warnings=warnings))
    return job_id


_METRICS = {"teacher": {"eval": {"n": 40, "roc_auc": 0.5, "macro_f1": 0.33}},
            "student": {"eval": {"n": 40, "roc_auc": 0.71, "macro_f1": 0.33}}}


def test_jobs_show_their_warnings(client):
    warned, clean = _job(WARNED), _job([])
    assert client.get(f"/jobs/{warned}").json()["warnings"] == WARNED
    assert client.get(f"/jobs/{clean}").json()["warnings"] == []
    listed = {j["id"]: j["warnings"] for j in client.get("/jobs").json()["jobs"]}
    assert listed == {warned: WARNED, clean: []}


# ---------------------------------------------------------------- dashboard and CLI
def test_dashboard_shows_warnings_and_no_green_figure(client, tiny_models):
    clean = register_tiny(tiny_models[1], seed=1)
    warned = register_tiny(tiny_models[1], seed=2, warnings=WARNED)
    page = client.get(f"/ui/parts/models/crisis?version={warned}").text
    assert 'id="warnings"' in page and 'role="alert"' in page
    assert 'data-code="teacher_one_class"' in page and "&#39;crisis&#39; for 100%" in page
    assert page.index('id="warnings"') < page.index('id="quality"')
    assert 'class="better"' not in page and 'class="better-unsure"' in page
    assert 'class="chip warn"' in page  # the versions table marks the warned version
    plain = client.get(f"/ui/parts/models/crisis?version={clean}").text
    assert 'id="warnings"' not in plain and 'class="better"' in plain

    job_page = client.get(f"/ui/parts/jobs/{_job(WARNED)}").text
    assert 'data-code="student_below_majority"' in job_page
    assert 'class="better"' not in job_page  # the student's ROC-AUC 0.71 is not shown green
    assert 'class="better"' in client.get(f"/ui/parts/jobs/{_job([])}").text
    assert "2 warnings" in client.get("/ui/parts/jobs").text


def test_cli_shows_warnings_first_and_never_green():
    warned = Console(record=True, width=200, color_system="standard")
    warned.print(warnings_panel(WARNED))
    warned.print(comparison_table(_METRICS, warned=True))
    text = warned.export_text(styles=True)
    assert "2 warning(s)" in text and "teacher_one_class" in text
    assert "\x1b[1;32m" not in text and "\x1b[1m0.710" in text  # bold, not green
    assert warnings_panel([]) is None
    plain = Console(record=True, width=200, color_system="standard")
    plain.print(comparison_table(_METRICS))
    assert "\x1b[1;32m0.710" in plain.export_text(styles=True)  # green without warnings

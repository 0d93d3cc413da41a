from pathlib import Path

import pytest

from tests.fixtures.tiny import corpus
from worker.distill import engine as engine_mod
from worker.distill import trainer as trainer_mod
from worker.distill.config import EngineConfig
from worker.distill.engine import Cancelled, DistillData, EngineError, run


def _cfg(tiny_models, strategy="adaptive", multi=False, **distill):
    labels = ([{"name": "flood"}, {"name": "fire"}, {"name": "storm"}] if multi else
              [{"name": "crisis"}, {"name": "calm", "verbalizer": "none"}])
    return EngineConfig.from_dict({
        "task": {"labels": labels, "multi_label": multi},
        "teacher": {"model": tiny_models[0], "batch_size": 8},
        "student": {"model": tiny_models[1], "max_length": 32},
        "distillation": {"strategy": strategy, "epochs": 2, "batch_size": 8, **distill}})


@pytest.mark.parametrize("strategy", ["adaptive", "vanilla_kd", "pseudo_label"])
def test_single_label_run_produces_student_and_side_by_side_metrics(tmp_path, tiny_models,
                                                                    strategy):
    events = []
    data = DistillData(corpus(40), corpus(8), ["crisis", "calm"] * 4)
    res = run(_cfg(tiny_models, strategy), data,
              workdir=tmp_path / "w", cache_dir=tmp_path / "c",
              progress=lambda *a: events.append(a))
    assert set(res.files) == {"adapter.safetensors", "head.safetensors", "student.json"}
    m = res.metrics
    assert m["teacher"]["eval"]["n"] == 8 and m["student"]["eval"]["n"] == 8
    assert 0.0 <= m["student"]["holdout_agreement"] <= 1.0
    assert m["student"]["trainable_params"] < m["student"]["total_params"]
    assert m["teacher"]["ms_per_text"] > 0 and m["student"]["ms_per_text"] > 0
    states = [e[0] for e in events]
    assert states.index("annotating") < states.index("distilling") < states.index("evaluating")
    fractions = [e[2] for e in events]
    assert fractions == sorted(fractions), "overall progress never goes backwards"


@pytest.mark.parametrize("strategy", ["adaptive", "vanilla_kd"])
def test_multi_label_run(tmp_path, tiny_models, strategy):
    gold = [["flood"], ["fire", "storm"], [], ["storm"]]
    res = run(_cfg(tiny_models, strategy, multi=True), DistillData(corpus(30), corpus(4), gold),
              workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert res.metrics["student"]["eval"]["n"] == 4
    assert set(res.metrics["student"]["eval"]["per_class"]) == {"flood", "fire", "storm"}


def test_resume_skips_completed_phases(tmp_path, tiny_models, monkeypatch):
    cfg = _cfg(tiny_models)
    data = DistillData(corpus(30))
    first = run(cfg, data, workdir=tmp_path / "w", cache_dir=tmp_path / "c")

    def no_teacher(*a, **k):
        raise AssertionError("the teacher must not be loaded again on resume")

    monkeypatch.setattr(engine_mod.teachers, "load_teacher", no_teacher)
    monkeypatch.setattr(trainer_mod, "build_student", no_teacher)
    second = run(cfg, data, workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert second.files == first.files


def test_teacher_cache_is_shared_across_runs(tmp_path, tiny_models):
    cfg = _cfg(tiny_models, "vanilla_kd")
    run(cfg, DistillData(corpus(30)), workdir=tmp_path / "a", cache_dir=tmp_path / "c")
    again = run(cfg, DistillData(corpus(30)), workdir=tmp_path / "b", cache_dir=tmp_path / "c")
    assert again.metrics["annotation"]["texts_scored"] == 0
    assert again.metrics["annotation"]["texts_cached"] == 30
    # Passes asked for do not depend on the cache; passes computed do (the latency batch is
    # always timed fresh).
    passes = again.metrics["teacher_passes"]
    assert passes["by_stage"] == {"label": {"requested": 30, "computed": 0},
                                  "latency": {"requested": 30, "computed": 30}}
    assert (passes["requested"], passes["computed"], passes["texts"]) == (60, 30, 30)
    assert passes["per_text"] == 2.0 and passes["computed_per_text"] == 1.0


def test_cancel_from_the_progress_callback_stops_the_run(tmp_path, tiny_models):
    def cancel_when_distilling(state, *rest):
        if state == "distilling":
            raise Cancelled()

    with pytest.raises(Cancelled):
        run(_cfg(tiny_models), DistillData(corpus(30)), workdir=tmp_path / "w",
            cache_dir=tmp_path / "c", progress=cancel_when_distilling)
    assert not (tmp_path / "w" / "student").exists()


def test_empty_corpus_after_filtering_fails_early(tmp_path, tiny_models):
    with pytest.raises(EngineError) as err:
        run(_cfg(tiny_models), DistillData(["  ", "same", "same", ""]),
            workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert err.value.code == "corpus_too_small"


def test_eval_label_outside_the_task_is_refused(tmp_path, tiny_models):
    with pytest.raises(EngineError, match="not a task label") as err:
        run(_cfg(tiny_models), DistillData(corpus(20), ["x"], ["fire"]),
            workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert err.value.code == "eval_label_unknown"


def test_artifact_files_match_their_checksums(tmp_path, tiny_models):
    from worker.distill.sources import sha256_file

    res = run(_cfg(tiny_models), DistillData(corpus(20)), workdir=tmp_path / "w",
              cache_dir=tmp_path / "c")
    for name, sha in res.files.items():
        assert sha256_file(Path(res.student_dir) / name) == sha


def test_adaptive_records_its_choices(tmp_path, tiny_models):
    res = run(_cfg(tiny_models), DistillData(corpus(40), corpus(8), ["crisis", "calm"] * 4),
              workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    strategy = res.metrics["strategy"]
    assert strategy["name"] == "adaptive" and strategy["pool_size"] >= 5
    prompts = res.metrics["prompts"]
    kept = [p for p in prompts if p["kept"]]
    assert kept and all("estimated_balanced_accuracy" in p for p in kept)
    assert all("probe_agreement" in p for p in prompts if p["kind"] != "labeler")
    weights = sum(p["weight"] for p in kept)
    assert abs(weights - 1.0) < 1e-3 or weights == 0.0  # tiny random models may all be chance
    assert "embedding" in [p["name"] for p in kept]
    (judge,) = strategy["judge"]
    assert judge["chosen"] in {"gaussian", "weighted", "dawid_skene"}
    assert {c["model"] for c in judge["candidates"]} == {"gaussian", "weighted", "dawid_skene"}
    decisions = res.metrics["decisions"]
    assert set(decisions) == {"representations", "progressive"}
    assert decisions["representations"]["setting"] == "auto"
    phases = set(res.metrics["phases"])
    assert ("align" in phases) == decisions["representations"]["used"]
    assert ("easy" in phases) == decisions["progressive"]["used"]
    st = res.metrics["self_training"]
    assert st["rounds"] and all("why" in r for r in st["rounds"])
    assert res.lineage["self_training"] == st and res.lineage["decisions"] == decisions
    assert "reprompted" in strategy
    # only corpus texts are re-asked (the student never trains on eval texts)
    assert strategy["reprompted"] == strategy["reprompted_corpus"] <= int(0.15 * 40)
    passes = res.metrics["teacher_passes"]
    stages = passes["by_stage"]
    # successive halving: every prompt on half the probe (plus 3 content-free inputs), the
    # best 3 on all of it; the kept one then labels the texts it has not read yet
    pool, probe = strategy["pool_size"], strategy["probe_size"]
    half = (probe + 1) // 2
    assert stages["probe"]["requested"] == pool * (half + 3) + 3 * (probe - half)
    assert sorted(p["probe_texts"] for p in prompts if p["kind"] != "labeler") == \
        [half] * (pool - 3) + [probe] * 3
    assert [p["probe_texts"] for p in prompts if p["kept"] and p["kind"] != "labeler"] == [probe]
    # the probe is the whole corpus here and the eval texts repeat corpus texts: the kept
    # prompt's pass over them is no new pass (its probe pass kept the hidden states too)
    assert probe == 40 and stages["label"] == {"requested": 0, "computed": 0}
    assert passes["requested"] == sum(v["requested"] for v in stages.values())
    assert passes["computed"] <= passes["requested"] and passes["texts"] == 48
    assert res.lineage["prompts"] and all(p["kept"] for p in res.lineage["prompts"])


def test_without_halving_every_prompt_reads_the_whole_probe(tmp_path, tiny_models):
    cfg = _cfg(tiny_models)
    cfg.teacher.probe_survivors = 0
    res = run(cfg, DistillData(corpus(40)), workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    strategy, stages = res.metrics["strategy"], res.metrics["teacher_passes"]["by_stage"]
    assert stages["probe"]["requested"] == strategy["pool_size"] * (strategy["probe_size"] + 3)
    assert {p["probe_texts"] for p in res.metrics["prompts"] if p["kind"] != "labeler"} == {40}


@pytest.mark.parametrize("switch", [{"representations": False}, {"progressive": False}])
def test_ablation_switches_change_the_schedule(tmp_path, tiny_models, switch):
    res = run(_cfg(tiny_models, **switch), DistillData(corpus(30)), workdir=tmp_path / "w",
              cache_dir=tmp_path / "c")
    phases = set(res.metrics["phases"]) - {"annotate"}
    if "representations" in switch:
        assert "align" not in phases
    if "progressive" in switch:
        assert phases <= {"align", "full"} and "full" in phases


def test_a_run_stopped_mid_distillation_resumes_at_the_next_phase(tmp_path, tiny_models):
    cfg = _cfg(tiny_models, representations=True, progressive=True)  # every phase runs
    seen = []

    def stop_in_full(state, phase, *rest):
        seen.append(phase)
        if phase == "full":
            raise Cancelled()

    with pytest.raises(Cancelled):
        run(cfg, DistillData(corpus(30)), workdir=tmp_path / "w", cache_dir=tmp_path / "c",
            progress=stop_in_full)
    resumed = []
    run(cfg, DistillData(corpus(30)), workdir=tmp_path / "w", cache_dir=tmp_path / "c",
        progress=lambda state, phase, *rest: resumed.append(phase))
    assert "align (resumed)" in resumed and "easy (resumed)" in resumed
    assert "full" in resumed and "full (resumed)" not in resumed


def test_a_resumed_run_asks_the_teacher_in_the_precision_its_annotation_used(
        tmp_path, tiny_models, monkeypatch):
    """teacher.precision "auto" resolved to bfloat16 where the first attempt annotated; the
    retry runs where "auto" means float32. Its refine re-asks must come from the teacher the
    checkpointed scores came from, not a second one (cached apart, scoring apart)."""
    from worker.distill.teachers import causal_lm

    cfg = _cfg(tiny_models, representations=True, progressive=True)
    assert cfg.teacher.precision == "auto"
    monkeypatch.setattr(causal_lm, "native_bf16", lambda _device: True)

    def stop_in_full(state, phase, *rest):
        if phase == "full":
            raise Cancelled()

    with pytest.raises(Cancelled):
        run(cfg, DistillData(corpus(30)), workdir=tmp_path / "w", cache_dir=tmp_path / "c",
            progress=stop_in_full)
    monkeypatch.setattr(causal_lm, "native_bf16", lambda _device: False)
    loaded: list[str] = []
    load = engine_mod.teachers.load_teacher

    def recording(*args, **kwargs):
        teacher = load(*args, **kwargs)
        loaded.append(teacher.precision)
        return teacher

    monkeypatch.setattr(engine_mod.teachers, "load_teacher", recording)
    res = run(cfg, DistillData(corpus(30)), workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert loaded == ["bfloat16"], "refine asks the teacher again, as the annotation's"
    assert res.metrics["teacher"]["precision"] == "bfloat16"

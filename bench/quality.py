"""Quality benchmark of the distillation engine on real crisis data (`make bench-quality`).

Data: the disaster-response corpus, news genre. Training corpus: up to --corpus messages of
the train split, text only. Evaluation: --eval messages of the test split.
  task `crisis`:      binary crisis vs not (the `related` column)
  task `crisis_type`: earthquake / floods / storm / fire / other crisis / none
Rows: teacher zero-shot (one fixed prompt), teacher adaptive ensemble, pseudo-label
fine-tuning, vanilla KD, adaptive student, and adaptive without self-training, without
representations, without phases, without re-prompting; and "supervised": the same student
trained on the corpus's gold labels (used for this row only), the ceiling that label-free
distillation is measured against. --seeds seeds each. Where the adaptive run's own label-free
decision already switched a mechanism off, its "without" row is that same run (recorded as
such, not trained twice). Every student is also evaluated out of domain, on the test split's
`social` and `direct` genres. A label-model table refits each label model on the adaptive
runs' stored annotators and scores it on the eval set. Every run's metrics are kept under
var/bench/runs/ so an interrupted benchmark resumes where it stopped; teacher outputs are
cached across runs by (teacher, prompt, text), as in production.
Writes bench/results/quality.json, quality.md and quality.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import DEFAULT_STUDENT, DEFAULT_TEACHER  # noqa: E402
from scripts.fetch_assets import fetch_corpus  # noqa: E402
from worker.distill.config import EngineConfig  # noqa: E402
from worker.distill.engine import DistillData, run  # noqa: E402
from worker.distill.spec import complete_spec, load_config  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "var" / "bench"
CACHE = Path(os.environ.get("TAILOR_CACHE_DIR", ROOT / "var" / "cache"))

TASKS: dict[str, dict[str, Any]] = {
    "crisis": {
        "labels": [
            {"name": "crisis", "description": "the message is about a disaster, emergency, "
             "humanitarian crisis, aid need or its aftermath"},
            {"name": "not_crisis", "description": "the message is about something else: "
             "politics, economy, sport, culture, routine news"}],
        "instruction": "You screen news for an emergency-response team.",
    },
    "crisis_type": {
        "labels": [
            {"name": "earthquake", "description": "an earthquake or its aftermath"},
            {"name": "floods", "description": "floods, flooding or heavy rain"},
            {"name": "storm", "description": "a storm, hurricane, cyclone or typhoon"},
            {"name": "fire", "description": "a fire or wildfire"},
            {"name": "other_crisis", "verbalizer": "other crisis",
             "description": "another disaster, emergency, conflict, epidemic or aid need"},
            {"name": "none", "description": "no crisis at all: routine news"}],
        "instruction": "You screen news for an emergency-response team.",
    },
}
STUDENT_ROWS: dict[str, dict[str, Any]] = {
    "pseudo_label": {"distillation": {"strategy": "pseudo_label"}},
    "vanilla_kd": {"distillation": {"strategy": "vanilla_kd"}},
    "adaptive": {},
    "adaptive_no_self_training": {"distillation": {"self_training_rounds": 0}},
    "adaptive_no_representations": {"distillation": {"representations": False}},
    "adaptive_no_phases": {"distillation": {"progressive": False}},
    "adaptive_no_reprompt": {"teacher": {"reprompt": False}},
    # the adaptive row's teacher in float32 (the default, precision auto, is bfloat16 on a
    # CPU with AVX512-BF16 or AMX: worker/distill/teachers/causal_lm.py)
    "adaptive_float32_teacher": {"teacher": {"precision": "float32"}},
    "supervised": {},  # gold labels of the corpus: see run_supervised
}
# "without" rows whose switch an adaptive run may already have decided by itself.
DECIDED = {"adaptive_no_representations": "representations", "adaptive_no_phases": "progressive"}
OOD_GENRES = ("social", "direct")
ROW_TITLES = {
    "teacher_zero_shot": "teacher zero-shot (one fixed prompt)",
    "teacher_adaptive": "teacher adaptive ensemble",
    "pseudo_label": "pseudo-label fine-tuning",
    "vanilla_kd": "vanilla KD",
    "adaptive": "**adaptive student**",
    "adaptive_no_self_training": "adaptive without self-training",
    "adaptive_no_representations": "adaptive without representations",
    "adaptive_no_phases": "adaptive without phases",
    "adaptive_no_reprompt": "adaptive without re-prompting",
    "adaptive_float32_teacher": "adaptive, float32 teacher (teacher.precision)",
    "crude_median": "crude average of the same signals (binary: cut at the median)",
    "crude_prior": "crude average of the same signals, cut at the judge's prior",
    "supervised": "supervised (gold labels; the ceiling)",
}


def gold(task: str, row: dict[str, str]) -> str:
    if task == "crisis":
        return "crisis" if row["related"] == "1" else "not_crisis"
    if row["related"] != "1":
        return "none"
    for column, label in (("earthquake", "earthquake"), ("floods", "floods"),
                          ("storm", "storm"), ("fire", "fire")):
        if row[column] == "1":
            return label
    return "other_crisis"


def _rows(genre: str) -> list[dict[str, str]]:
    with fetch_corpus().open(encoding="utf-8-sig", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["genre"] == genre and r["related"] in "01"]


def load(task: str, n_corpus: int, n_eval: int) -> tuple[list[str], list[str], list[str]]:
    corpus, eval_texts, eval_labels, _ = load_with_gold(task, n_corpus, n_eval)
    return corpus, eval_texts, eval_labels


def load_with_gold(task: str, n_corpus: int, n_eval: int
                   ) -> tuple[list[str], list[str], list[str], list[str]]:
    """News genre: corpus texts, eval texts, eval gold, and the corpus's own gold labels
    (read only by the supervised row)."""
    rows = _rows("news")
    rng = random.Random(1234)  # one fixed sample for every row and seed
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    rng.shuffle(train)
    rng.shuffle(test)
    train, test = train[:n_corpus], test[:n_eval]
    return ([r["message"] for r in train], [r["message"] for r in test],
            [gold(task, r) for r in test], [gold(task, r) for r in train])


def load_ood(task: str, genre: str, n: int) -> tuple[list[str], list[str]]:
    """Test-split texts of another genre and their gold labels (out-of-domain check)."""
    test = [r for r in _rows(genre) if r["split"] == "test"]
    random.Random(4321).shuffle(test)
    return [r["message"] for r in test[:n]], [gold(task, r) for r in test[:n]]


def run_path(task: str, row: str, seed: int) -> Path:
    return WORK / "runs" / f"{task}-{row}-{seed}.json"


def finished_run(task: str, row: str, seed: int, n_corpus: int, n_eval: int
                 ) -> dict[str, Any] | None:
    """A finished run of this size, if there is one (runs of other sizes are not mixed in)."""
    path = run_path(task, row, seed)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    m = record["metrics"]
    same = m["corpus"]["texts"] == n_corpus and m["student"]["eval"]["n"] == n_eval
    return record if same else None


def config(spec: dict[str, Any]) -> EngineConfig:
    """The engine's config for `spec`, completed as a submission completes it (the service's
    default models)."""
    return load_config(complete_spec(spec, teacher_model=DEFAULT_TEACHER,
                                     student_model=DEFAULT_STUDENT))


def run_one(task: str, row: str, seed: int, data: DistillData, epochs: int,
            corpus_gold: list[str], ood: dict[str, tuple[list[str], list[str]]]
            ) -> dict[str, Any]:
    out = run_path(task, row, seed)
    if out.exists():
        return json.loads(out.read_text())
    if row in DECIDED:
        same = _decided_the_same(task, row, seed)
        if same is not None:
            out.write_text(json.dumps(same, default=float))
            return same
    started = time.perf_counter()
    if row == "supervised":
        metrics, student = run_supervised(task, seed, data, corpus_gold, epochs)
    else:
        spec: dict[str, Any] = {"task": TASKS[task],
                                "distillation": {"seed": seed, "epochs": epochs}}
        for part, values in STUDENT_ROWS[row].items():
            spec.setdefault(part, {}).update(values)
        cfg = config(spec)
        result = run(cfg, data, workdir=WORK / "work" / task / row / str(seed),
                     cache_dir=CACHE)
        metrics = result.metrics
        student = _reload(cfg, result.student_dir, result.files)
    record = {"task": task, "row": row, "seed": seed, "metrics": metrics,
              "ood": {genre: _score(student, texts, labels)
                      for genre, (texts, labels) in ood.items()},
              "wall_seconds": round(time.perf_counter() - started, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, default=float))
    print(f"  {task:11s} {row:28s} seed {seed}: student macro-F1 "
          f"{metrics['student']['eval']['macro_f1']:.3f} "
          f"({record['wall_seconds']:.0f} s)", flush=True)
    return record


def _decided_the_same(task: str, row: str, seed: int) -> dict[str, Any] | None:
    """The adaptive run itself when its label-free decision already switched this row's
    mechanism off (the row would train the very same student)."""
    path = run_path(task, "adaptive", seed)
    if not path.exists():
        return None
    adaptive = json.loads(path.read_text())
    decision = (adaptive["metrics"].get("decisions") or {}).get(DECIDED[row]) or {}
    if decision.get("used") is not False:
        return None
    return {**adaptive, "row": row, "same_run_as": "adaptive",
            "why": f"the adaptive run decided {DECIDED[row]}=off by itself"}


def _reload(cfg: EngineConfig, student_dir: Path, files: dict[str, str]) -> Any:
    from worker.distill.sources import resolve
    from worker.distill.trainer import reload_student

    base = resolve(str(cfg.student.model), CACHE / "models")
    student, tokenizer = reload_student(cfg, base, student_dir, files, torch_cpu())
    meta = json.loads((student_dir / "student.json").read_text())
    return student, tokenizer, cfg, meta["temperature"]


def torch_cpu() -> Any:
    import torch

    return torch.device("cpu")


def _score(student: Any, texts: list[str], labels: list[str]) -> dict[str, Any] | None:
    """Macro-F1 and accuracy of a trained student on labeled texts it never saw."""
    if not texts:
        return None
    from worker.distill.calibration import probabilities
    from worker.distill.metrics import classification_report
    from worker.distill.phases import encode, predict_logits

    model, tokenizer, cfg, temperature = student
    enc = encode(tokenizer, texts, cfg.student.max_length)
    logits = predict_logits(model, enc, np.arange(len(texts)), 64, torch_cpu())
    probs = probabilities(logits, temperature, cfg.task.multi_label)
    report = classification_report(probs, labels, cfg.task.label_names, cfg.task.multi_label)
    return {"macro_f1": report["macro_f1"], "accuracy": report["accuracy"], "n": len(texts)}


def run_supervised(task: str, seed: int, data: DistillData, corpus_gold: list[str],
                   epochs: int) -> tuple[dict[str, Any], Any]:
    """The ceiling: the same student, adapter and trainer, on the corpus's gold labels."""
    from worker.distill.evaluate import evaluate_run
    from worker.distill.phases import Phase
    from worker.distill.sources import resolve
    from worker.distill.strategy_base import Annotation, Context
    from worker.distill.trainer import distill

    cfg = config({"task": TASKS[task], "distillation": {"seed": seed, "epochs": epochs}})
    names = cfg.task.label_names
    corpus = list(data.corpus)
    k = len(names)
    onehot = np.eye(k)[[names.index(g) for g in corpus_gold]]
    probs = np.concatenate([onehot, np.full((len(data.eval_texts), k), 1.0 / k)])
    ann = Annotation(probs.astype(np.float32), None, {"prompts": []})

    class Gold:
        name, self_trains = "supervised", False

        def schedule(self, cfg: EngineConfig, ann: Annotation, train_idx: np.ndarray
                     ) -> list[Phase]:
            return [Phase("train", train_idx, epochs, "soft_ce", (1.0, 1.0))]

    from worker.distill.engine import split

    train_idx, hold_idx = split(len(corpus), cfg.distillation.holdout_fraction, seed)
    base = resolve(str(cfg.student.model), CACHE / "models")
    ctx = Context(cfg=cfg, load_teacher=_no_teacher, cache=None, on_texts=lambda n: None)
    workdir = WORK / "work" / task / "supervised" / str(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    student, tokenizer, meta = distill(cfg, Gold(), ctx, ann, corpus, train_idx, hold_idx,
                                       base, workdir, torch_cpu(), f"supervised-{seed}",
                                       lambda *a, **kw: None)
    metrics = evaluate_run(cfg, student, tokenizer, ann, corpus, list(data.eval_texts),
                           list(data.eval_labels), hold_idx, torch_cpu(), meta)
    metrics["teacher"] = {"ms_per_text": None}
    metrics["annotation"] = {"seconds": None, "texts_cached": None}
    return metrics, (student, tokenizer, cfg, meta["temperature"])


def _no_teacher() -> Any:
    raise RuntimeError("the supervised row asks no teacher")


def figures(run_record: dict[str, Any], side: str) -> dict[str, float | None]:
    m = run_record["metrics"]
    ev = m[side]["eval"]
    return {
        "macro_f1": ev["macro_f1"], "accuracy": ev["accuracy"], "roc_auc": ev.get("roc_auc"),
        "ece": ev["ece"],
        "agreement": m["student"]["holdout_agreement"] if side == "student" else None,
        # Teacher time counts only where the teacher really ran on every text: later runs
        # with the same prompts are served by the teacher cache (as in production).
        "annotation_seconds": (m["annotation"]["seconds"]
                               if m["annotation"].get("texts_cached") == 0 else None),
        "train_seconds": m["student"]["train_seconds"] if side == "student" else None,
        "teacher_ms_per_text": m["teacher"]["ms_per_text"],
        # Teacher passes per text given to it (corpus + eval set), cache hits included: what
        # the strategy costs on a cold cache (worker.distill.engine.teacher_passes).
        "passes_per_text": (m.get("teacher_passes") or {}).get("per_text"),
        "student_ms_per_text": m["student"]["ms_per_text"] if side == "student" else None,
        **{f"ood_{genre}": ((run_record.get("ood") or {}).get(genre) or {}).get("macro_f1")
           if side == "student" else None for genre in OOD_GENRES},
    }


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        rows: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if r["task"] != task:
                continue
            rows.setdefault(r["row"], []).append(figures(r, "student"))
            if r["row"] in ("vanilla_kd", "pseudo_label"):  # both ask the one fixed prompt
                rows.setdefault("teacher_zero_shot", []).append(figures(r, "teacher"))
            if r["row"] == "adaptive":
                rows.setdefault("teacher_adaptive", []).append(figures(r, "teacher"))
        table[task] = {}
        for row, items in rows.items():
            stats = {}
            for key in items[0]:
                values = [x[key] for x in items if x[key] is not None]
                stats[key] = ({"mean": float(np.mean(values)), "std": float(np.std(values)),
                               "n": len(values)} if values else None)
            table[task][row] = stats
    return table


def crude_average_rows(records: list[dict[str, Any]], n_corpus: int, n_eval: int
                       ) -> dict[str, dict[str, Any]]:
    """The label-free baseline of issue 12, rebuilt from each adaptive run's own signals.

    Each stored annotator (the kept teacher prompt and the embedding labeler, before
    self-training) gives log-probabilities [N, K]; each column is standardised over the
    corpus, the annotators are averaged with equal weights, and the corpus is labelled from
    that average: binary tasks cut at the median (the recipe of the issue, a 50% prior) or at
    the judge's own estimated prior; multi-class tasks by argmax (one row). A
    logistic regression on the frozen student-base embeddings then learns those labels and is
    scored on the eval set: {task: {row: {metric: stats}}}.
    """
    from safetensors.numpy import load_file
    from sklearn.linear_model import LogisticRegression

    from worker.distill.metrics import classification_report

    out: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        _, _, eval_labels = load(task, n_corpus, n_eval)
        names = [lab["name"] for lab in TASKS[task]["labels"]]
        cells: dict[str, list[dict[str, float | None]]] = {}
        for r in records:
            work = WORK / "work" / task / "adaptive" / str(r["seed"])
            if r["task"] != task or r["row"] != "adaptive" or \
                    not (work / "annotation.safetensors").exists():
                continue
            arrays = load_file(str(work / "annotation.safetensors"))
            record = json.loads((work / "annotation.json").read_text())["record"]
            n = len(arrays["probs"]) - len(eval_labels)
            z = []
            for i in range(len(record["annotators"][0])):
                lp = np.log(np.clip(arrays[f"extra.annotator.0.{i}"].astype(np.float64),
                                    1e-6, 1))
                mu, sd = lp[:n].mean(0), lp[:n].std(0) + 1e-9
                z.append((lp - mu) / sd)
            score = np.mean(z, axis=0)
            prior = record["estimated_prior"][0]
            for row in ("crude_median", "crude_prior")[:2 if len(names) == 2 else 1]:
                if len(names) == 2:
                    margin = score[:, 1] - score[:, 0]
                    share = 0.5 if row == "crude_median" else prior[1]
                    labels = (margin[:n] > np.quantile(margin[:n], 1 - share)).astype(int)
                else:
                    labels = score[:n].argmax(1)
                model = LogisticRegression(max_iter=2000)
                model.fit(arrays["extra.embeddings"][:n], labels)
                post = np.zeros((len(eval_labels), len(names)))
                post[:, model.classes_] = model.predict_proba(arrays["extra.embeddings"][n:])
                rep = classification_report(post, eval_labels, names, False)
                cells.setdefault(row, []).append(
                    {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"],
                     "roc_auc": rep.get("roc_auc"), "ece": rep.get("ece")})
        out[task] = {row: {key: ({"mean": float(np.mean(v)), "std": float(np.std(v)),
                                  "n": len(v)} if (v := [c[key] for c in items
                                                         if c[key] is not None]) else None)
                           for key in items[0]}
                     for row, items in cells.items()}
    return out


def prefix_cache_speed(n: int = 64) -> dict[str, float]:
    """Teacher texts/s with and without the shared-prefix KV cache (no teacher cache)."""
    from worker.distill.config import TaskConfig
    from worker.distill.prompts import default_prompts
    from worker.distill.sources import resolve
    from worker.distill.teachers import HFTeacher

    texts, _, _ = load("crisis", n, 0)
    teacher = HFTeacher(resolve(DEFAULT_TEACHER, CACHE / "models"), "cpu",
                        convert_cache=CACHE / "models")
    prompt = default_prompts(TaskConfig(**TASKS["crisis"]))[0]
    teacher.score(prompt, texts[:8], batch_size=8)  # warm-up
    speeds = {}
    for cached in (True, False):
        started = time.perf_counter()
        teacher.score(prompt, texts, batch_size=16, prefix_cache=cached, want_hidden=False)
        speeds["with_prefix_cache" if cached else "without_prefix_cache"] = \
            n / (time.perf_counter() - started)
    speeds["speedup"] = speeds["with_prefix_cache"] / speeds["without_prefix_cache"]
    return {k: round(v, 2) for k, v in speeds.items()}


def fmt(stat: dict[str, float] | None, digits: int = 3) -> str:
    if not stat:
        return "–"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def write_markdown(summary: dict[str, Any], path: Path) -> None:
    lines = [
        "# Quality benchmark", "",
        f"Command: `{summary['command']}`  ",
        f"Machine: {summary['machine']}  ",
        f"Data: disaster-response corpus, news genre; {summary['corpus']} unlabeled train-split "
        f"messages, {summary['eval']} test-split messages for evaluation; seeds per task "
        f"{summary['seeds']}. Mean ± std over seeds.", "",
        "`teacher s` is the teacher's wall time where it ran on every text (corpus and eval "
        "set); runs served from the teacher cache (later seeds, rows sharing prompts) are "
        "left out of it. Latencies are per text at batch 32 on the same CPU. `teacher "
        "passes/text` counts every text the teacher was asked to read under a prompt (a "
        "channel prompt reads it once per label), cache hits included, over corpus + eval "
        "texts.", "",
    ]
    cols = [("macro_f1", "macro-F1", 3), ("accuracy", "accuracy", 3), ("roc_auc", "ROC-AUC", 3),
            ("ece", "ECE", 3), ("agreement", "agreement", 3),
            ("annotation_seconds", "teacher s", 0), ("train_seconds", "train s", 0),
            ("teacher_ms_per_text", "teacher ms/text", 1),
            ("passes_per_text", "teacher passes/text", 2),
            ("student_ms_per_text", "student ms/text", 1),
            ("ood_social", "F1 social", 3), ("ood_direct", "F1 direct", 3)]
    for task, rows in summary["table"].items():
        lines += [f"## Task `{task}`", "", "| row | " + " | ".join(c[1] for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for row in ROW_TITLES:
            if row in rows:
                cells = [fmt(rows[row].get(key), digits) for key, _, digits in cols]
                lines.append(f"| {ROW_TITLES[row]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["`F1 social` and `F1 direct`: macro-F1 of the same student on the test split's "
              "`social` and `direct` genres (trained on news only: an out-of-domain check).", ""]
    if summary.get("label_models"):
        lines += ["## Label models", "",
                  "Each label model refitted on the adaptive runs' stored annotators (the kept "
                  "teacher prompt and the embedding labeler, before self-training) and scored on "
                  "the eval set. `criterion` is the label-free leave-one-source-out agreement the "
                  "judge ranks them by; `chosen` counts the seeds where the judge picked it.", "",
                  "| task | label model | criterion | macro-F1 | ROC-AUC | chosen |",
                  "|---|---|---|---|---|---|"]
        for task, models in summary["label_models"].items():
            for name, st in models.items():
                lines.append(f"| {task} | {name} | {fmt(st['criterion'])} | "
                             f"{fmt(st['macro_f1'])} | {fmt(st['roc_auc'])} | {st['chosen']} |")
        lines.append("")
    lines += ["## Targets", ""]
    for line in summary["targets"]:
        lines.append(f"- {line}")
    lines += ["", f"Prefix KV cache: {summary['prefix_cache']}", ""]
    path.write_text("\n".join(lines) + "\n")


def label_model_table(records: list[dict[str, Any]], n_corpus: int, n_eval: int
                      ) -> dict[str, dict[str, Any]]:
    """Every label model refitted on each adaptive run's stored annotators (group 0), scored
    on the eval set: {task: {model: {criterion, macro_f1, roc_auc, chosen}}}."""
    from safetensors.numpy import load_file

    from worker.distill import judge as jd
    from worker.distill.metrics import classification_report

    table: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        runs = [r for r in records if r["task"] == task and r["row"] == "adaptive"]
        if not runs:
            continue
        _, _, eval_labels = load(task, n_corpus, n_eval)
        names = [lab["name"] for lab in TASKS[task]["labels"]]
        rows: dict[str, dict[str, list[float]]] = {}
        chosen: dict[str, int] = {}
        for r in runs:
            work = WORK / "work" / task / "adaptive" / str(r["seed"])
            if not (work / "annotation.safetensors").exists():
                continue
            arrays = load_file(str(work / "annotation.safetensors"))
            record = json.loads((work / "annotation.json").read_text())["record"]
            group = record["annotators"][0]
            annotators = [jd.Annotator(a["name"], a["source"],
                                       arrays[f"extra.annotator.0.{i}"].astype(np.float64))
                          for i, a in enumerate(group)]
            judge = record["judge"][0]
            chosen[judge["chosen"]] = chosen.get(judge["chosen"], 0) + 1
            criteria = {c["model"]: c["criterion"] for c in judge["candidates"]}
            n = len(annotators[0].probs) - len(eval_labels)
            for model in jd.LABEL_MODELS:
                post = jd.fit(model, annotators, np.arange(n), r["seed"]).posterior[n:]
                rep = classification_report(post, eval_labels, names, False)
                cell = rows.setdefault(model, {"criterion": [], "macro_f1": [], "roc_auc": []})
                cell["macro_f1"].append(rep["macro_f1"])
                if rep.get("roc_auc") is not None:
                    cell["roc_auc"].append(rep["roc_auc"])
                if criteria.get(model) is not None:
                    cell["criterion"].append(criteria[model])
        table[task] = {model: {**{key: ({"mean": float(np.mean(v)), "std": float(np.std(v)),
                                          "n": len(v)} if v else None)
                                   for key, v in cell.items()},
                               "chosen": chosen.get(model, 0)}
                       for model, cell in rows.items()}
    return table


def targets(table: dict[str, Any], speed: dict[str, float]) -> list[str]:
    out = []
    for task, rows in table.items():
        if not {"adaptive", "vanilla_kd", "teacher_zero_shot"} <= set(rows):
            continue
        a = rows["adaptive"]["macro_f1"]["mean"]
        v = rows["vanilla_kd"]["macro_f1"]["mean"]
        t = rows["teacher_zero_shot"]["macro_f1"]["mean"]
        out.append(f"`{task}`: adaptive student macro-F1 {a:.3f} vs vanilla KD {v:.3f} "
                   f"({(a - v) * 100:+.1f} points; target +3) — "
                   f"{'MET' if a >= v + 0.03 else 'MISSED'}")
        out.append(f"`{task}`: adaptive student {a:.3f} vs teacher zero-shot {t:.3f} — "
                   f"{'MET' if a >= t else 'MISSED'}")
        if "supervised" in rows:
            sup = rows["supervised"]["macro_f1"]["mean"]
            closed = (a - t) / (sup - t) if sup > t else float("nan")
            want = 0.6 if task == "crisis" else None
            verdict = ("" if want is None else
                       f" (target {want:.0%}) — {'MET' if closed >= want else 'MISSED'}")
            out.append(f"`{task}`: adaptive student closes {closed:.0%} of the gap from teacher "
                       f"zero-shot {t:.3f} to supervised {sup:.3f}{verdict}")
        if "teacher_adaptive" in rows:
            ens = rows["teacher_adaptive"]["macro_f1"]["mean"]
            verdict = (f" (target +3) — {'MET' if a >= ens + 0.03 else 'MISSED'}"
                       if task == "crisis" else "")
            out.append(f"`{task}`: adaptive student {a:.3f} vs teacher adaptive ensemble "
                       f"{ens:.3f} ({(a - ens) * 100:+.1f} points){verdict}")
        for crude in ("crude_median", "crude_prior"):
            if crude in rows:
                c = rows[crude]["macro_f1"]["mean"]
                out.append(f"`{task}`: adaptive student {a:.3f} vs {ROW_TITLES[crude]} {c:.3f} "
                           f"({(a - c) * 100:+.1f} points; target: above) — "
                           f"{'MET' if a > c else 'MISSED'}")
        without = {r: rows[r]["macro_f1"]["mean"] for r in rows if r.startswith("adaptive_no")}
        if without:
            worst = max(without, key=without.get)
            out.append(f"`{task}`: adaptive default {a:.3f} vs best \"without\" row "
                       f"{ROW_TITLES[worst]} {without[worst]:.3f} (target: default at least as "
                       f"good) — {'MET' if a >= without[worst] else 'MISSED'}")
        s_ms = rows["adaptive"]["student_ms_per_text"]["mean"]
        t_ms = rows["adaptive"]["teacher_ms_per_text"]["mean"]
        out.append(f"`{task}`: student {s_ms:.1f} ms/text vs teacher {t_ms:.1f} ms/text at batch "
                   f"32 (1/{t_ms / s_ms:.0f}; target 1/30) — "
                   f"{'MET' if s_ms * 30 <= t_ms else 'MISSED'}")
    out.append(f"prefix caching: {speed['speedup']:.2f}x texts/s (target 2x) — "
               f"{'MET' if speed['speedup'] >= 2 else 'MISSED'}")
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["table"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in ROW_TITLES if r in summary["table"][task]]
        means = [summary["table"][task][r]["macro_f1"]["mean"] for r in rows]
        stds = [summary["table"][task][r]["macro_f1"]["std"] for r in rows]
        colors = ["#999999" if r.startswith("teacher") else "#2ca02c" if r == "supervised" else
                  "#d62728" if r == "adaptive" else "#1f77b4" for r in rows]
        ax.barh(range(len(rows)), means, xerr=stds, color=colors)
        ax.set_yticks(range(len(rows)), [ROW_TITLES[r].strip("*") for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("macro-F1 (test split)")
        ax.set_title(f"task: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--rows", nargs="*", default=list(STUDENT_ROWS))
    parser.add_argument("--aggregate-only", action="store_true",
                        help="train nothing: summarise the finished runs under var/bench/runs "
                             "(a task may then have fewer seeds than --seeds; the table says n)")
    args = parser.parse_args()
    records = []
    for task in args.tasks:
        if args.aggregate_only:
            found = (finished_run(task, row, seed, args.corpus, args.eval)
                     for seed in range(args.seeds) for row in args.rows)
            records += [r for r in found if r is not None]
            continue
        corpus, eval_texts, eval_labels, corpus_gold = load_with_gold(task, args.corpus,
                                                                      args.eval)
        data = DistillData(corpus, eval_texts, eval_labels)
        ood = {genre: load_ood(task, genre, args.eval) for genre in OOD_GENRES}
        print(f"task {task}: {len(corpus)} corpus, {len(eval_texts)} eval", flush=True)
        for seed in range(args.seeds):
            for row in args.rows:
                records.append(run_one(task, row, seed, data, args.epochs, corpus_gold, ood))
    speed = prefix_cache_speed()
    table = aggregate(records)
    for task, rows in crude_average_rows(records, args.corpus, args.eval).items():
        table.setdefault(task, {}).update(rows)
    summary = {
        "command": "make bench-quality  # python bench/quality.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, "
                   f"{platform.python_version()}, load average at end "
                   f"{os.getloadavg()[0]:.1f} (other work ran on the same cores)",
        "corpus": args.corpus, "eval": args.eval,
        "seeds": {task: sorted({r["seed"] for r in records if r["task"] == task})
                  for task in args.tasks},
        "table": table,
        "label_models": label_model_table(records, args.corpus, args.eval),
        "prefix_cache": speed, "targets": targets(table, speed),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(summary, indent=2))
    write_markdown(summary, RESULTS / "quality.md")
    plot(summary, RESULTS / "quality.png")
    print("\n".join(summary["targets"]))


if __name__ == "__main__":
    main()

"""Teacher speed benchmark (`make bench-teacher`): how long the offline teacher takes to load,
and what each CPU switch does to its speed and to its answers.

Model: the offline default teacher (SmolLM2-135M-Instruct, GGUF Q4_1, from the model cache).
Texts: the adaptive strategy's probe on the demo's corpus (`--probe` texts, 48 by default,
drawn with seed 0 from the first `--corpus` news messages of the disaster-response train
split, as worker/distill/adaptive.py draws them); prompts: the crisis task's prompt pool.

1. Load: the GGUF path (transformers reads the GGUF, builds config, tokenizer and weights)
   against the converted folder the engine now keeps in the model cache
   (worker.distill.sources.converted), interleaved, `--load-reps` each, plus the one-off
   conversion and a cProfile of what a converted load still spends.
2. Switches, each against the float32 teacher as the engine runs it (prefix KV cache on,
   texts sorted by length before batching, batch 16):
   - int8: dynamic int8 quantization of every linear layer (torch quantize_dynamic); with
     the LM head left in float32 it agreed no better (72.6% on 48 texts, git history of
     bench/results/teacher.md), so that variant is no longer run;
   - bfloat16: the job setting `teacher.precision: bfloat16` as the engine runs it on CPU
     (float32 weights, forward passes under torch.autocast: matrix products in bfloat16,
     norms, softmax and the residual stream in float32);
   - bf16_weights: every weight and activation in bfloat16 (the plain cast, for
     comparison);
   - no length bucketing: batches of 16 in corpus order (what sorting saves);
   - no prefix cache: the prompt prefix recomputed for every text (what the cache saves;
     question prompts only: channel prompts always reuse their short label prefixes).
   Speed: teacher texts/s over the timing prompts (a question and a channel prompt), runs
   interleaved A/B/C/D in rotating order `--reps` times; medians reported, with the load
   average. Agreement: share of (text, prompt) decisions (argmax over the options) equal to
   the float32 teacher's, over every prompt of the pool for int8, bfloat16 and bf16_weights
   (the others compute the same function in another order). A switch passes at >= 1.5x
   texts/s and >= 98% agreement.

Writes bench/results/teacher.json and teacher.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import DEFAULT_TEACHER  # noqa: E402
from bench.quality import TASKS, load  # noqa: E402
from worker.distill.config import TaskConfig  # noqa: E402
from worker.distill.prompts import Prompt, prompt_pool  # noqa: E402
from worker.distill.sources import ResolvedModel, resolve  # noqa: E402
from worker.distill.teachers.hf import HFTeacher  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = Path(os.environ.get("TAILOR_CACHE_DIR", ROOT / "var" / "cache"))
TARGET_SPEEDUP, TARGET_AGREEMENT = 1.5, 0.98  # issue 16
TIMING_PROMPTS = ("default", "channel-about")  # one question, one channel prompt
BATCH = 16  # the engine's default teacher.batch_size


def probe_texts(n_corpus: int, n_probe: int) -> list[str]:
    """The adaptive strategy's probe: `n_probe` of the first `n_corpus` news texts, seed 0."""
    corpus = load("crisis", n_corpus, 0)[0]
    rng = np.random.default_rng(0)
    probe = np.sort(rng.choice(len(corpus), size=min(n_probe, len(corpus)), replace=False))
    return [corpus[i] for i in probe]


def measure_load(src: ResolvedModel, reps: int) -> dict[str, Any]:
    """Seconds to load the teacher from GGUF vs from its converted folder (interleaved)."""
    out: dict[str, Any] = {"gguf": [], "converted": []}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        HFTeacher(src, "cpu", convert_cache=Path(tmp))
        out["first_load_with_conversion"] = round(time.perf_counter() - started, 2)
        for _ in range(reps):
            for kind in ("gguf", "converted"):
                started = time.perf_counter()
                HFTeacher(src, "cpu", convert_cache=Path(tmp) if kind == "converted" else None)
                out[kind].append(round(time.perf_counter() - started, 2))
        profile = cProfile.Profile()
        profile.enable()
        HFTeacher(src, "cpu", convert_cache=Path(tmp))
        profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
    out["converted_profile_top"] = _profile_lines(text.getvalue())
    for kind in ("gguf", "converted"):
        out[f"{kind}_median"] = statistics.median(out[kind])
    out["speedup"] = round(out["gguf_median"] / out["converted_median"], 1)
    return out


def _profile_lines(report: str, keep: int = 12) -> list[str]:
    """The heaviest cumulative entries of a cProfile report, as `seconds  function`."""
    lines = []
    for line in report.splitlines():
        parts = line.split(None, 5)
        if (len(parts) == 6 and parts[0][:1].isdigit() and parts[3].replace(".", "").isdigit()
                and "{" not in parts[5][:1]):
            where = parts[5].replace(str(ROOT), ".").replace(sys.prefix, "<venv>")
            lines.append(f"{float(parts[3]):6.2f} s  {where}")
    return lines[:keep]


def bf16_weights(src: ResolvedModel) -> HFTeacher:
    """The teacher with its weights and activations in bfloat16 (log-softmax in float32),
    which CPUs with AVX512-BF16 or AMX run natively."""
    teacher = HFTeacher(src, "cpu", convert_cache=CACHE / "models")
    teacher.model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers' .to stub
    teacher.body = teacher.model.base_model
    teacher.head = teacher.model.get_output_embeddings()
    return teacher


def run_switches(fp32: HFTeacher, int8: HFTeacher, bf16: HFTeacher, bf16_w: HFTeacher,
                 texts: list[str], pool: list[Prompt], reps: int) -> dict[str, Any]:
    """Median texts/s of each switch over interleaved repetitions, and its agreement."""
    timing = [p for p in pool if p.name in TIMING_PROMPTS]

    def score(teacher: HFTeacher, prompt: Prompt, **kw: Any) -> np.ndarray:
        return teacher.score(prompt, texts, batch_size=BATCH, want_hidden=False, **kw).logprobs

    def unbucketed(prompt: Prompt) -> np.ndarray:
        return np.concatenate([fp32.score(prompt, texts[i:i + BATCH], batch_size=BATCH,
                                          want_hidden=False).logprobs
                               for i in range(0, len(texts), BATCH)])

    switches: dict[str, Callable[[Prompt], np.ndarray]] = {
        "fp32": lambda p: score(fp32, p),
        "int8": lambda p: score(int8, p),
        "bfloat16": lambda p: score(bf16, p),
        "bf16_weights": lambda p: score(bf16_w, p),
        "no_length_bucketing": unbucketed,
        "no_prefix_cache": lambda p: score(fp32, p, prefix_cache=False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in switches}
    answers: dict[str, dict[str, np.ndarray]] = {name: {} for name in switches}
    names = list(switches)
    loads = []
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no fixed slot
        for name in order:
            started = time.perf_counter()
            for prompt in timing:
                answers[name][prompt.name] = switches[name](prompt)
            seconds[name].append(time.perf_counter() - started)
        loads.append(os.getloadavg()[0])
        print(f"  rep {rep + 1}/{reps}: " + ", ".join(
            f"{n} {len(texts) * len(timing) / seconds[n][-1]:.1f}/s" for n in names),
              flush=True)
    # the numeric switches against fp32 on every prompt (the timing prompts are done already)
    for prompt in pool:
        if prompt.name not in answers["fp32"]:
            print(f"  agreement on prompt {prompt.name}", flush=True)
            for name, teacher in (("fp32", fp32), ("int8", int8), ("bfloat16", bf16),
                                  ("bf16_weights", bf16_w)):
                answers[name][prompt.name] = score(teacher, prompt)
    base = statistics.median(seconds["fp32"])
    rows = {}
    for name in names:
        same = [float((answers[name][p].argmax(1) == answers["fp32"][p].argmax(1)).mean())
                for p in answers[name]]
        med = statistics.median(seconds[name])
        rows[name] = {
            "texts_per_s": round(len(texts) * len(timing) / med, 2),
            "texts_per_s_runs": [round(len(texts) * len(timing) / s, 2) for s in seconds[name]],
            "speedup": round(base / med, 3),
            "agreement": round(float(np.mean(same)), 4),
            "agreement_by_prompt": {p: round(v, 4) for p, v in zip(answers[name], same,
                                                                   strict=True)},
            "decisions": len(texts) * len(answers[name]),
        }
        rows[name]["passes"] = (rows[name]["speedup"] >= TARGET_SPEEDUP
                                and rows[name]["agreement"] >= TARGET_AGREEMENT)
    return {"rows": rows, "timing_prompts": [p.name for p in timing],
            "load_average_during": [round(x, 2) for x in loads]}


def write_markdown(summary: dict[str, Any], path: Path) -> None:
    load_s, sw = summary["load"], summary["switches"]
    lines = [
        "# Teacher benchmark", "",
        f"Command: `{summary['command']}`  ",
        f"Machine: {summary['machine']}  ",
        f"Texts: the adaptive probe, {summary['texts']} news messages of the demo corpus; "
        f"timing prompts {', '.join(sw['timing_prompts'])} (a channel prompt reads each text "
        f"once per label); batch {BATCH}; torch threads {summary['torch_threads']}; load "
        f"average during the runs {sw['load_average_during']}.", "",
        "## Load", "",
        "| path | seconds (median) | runs |", "|---|---|---|",
        f"| GGUF read by transformers (before) | {load_s['gguf_median']:.1f} | {load_s['gguf']} |",
        f"| converted folder from the model cache (now) | {load_s['converted_median']:.1f} | "
        f"{load_s['converted']} |",
        f"| first load: GGUF + conversion into the cache (once per model) | "
        f"{load_s['first_load_with_conversion']:.1f} | 1 |", "",
        f"{load_s['speedup']}x faster. What a converted load still spends (cProfile, "
        "cumulative):", "", "```", *load_s["converted_profile_top"], "```", "",
        "## CPU switches", "",
        f"Target: >= {TARGET_SPEEDUP}x teacher texts/s at >= {TARGET_AGREEMENT:.0%} agreement "
        "with the float32 teacher's decisions.", "",
        "| switch | texts/s (median) | runs | speedup | agreement | decisions | passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in sw["rows"].items():
        lines.append(f"| {name} | {row['texts_per_s']:.1f} | {row['texts_per_s_runs']} | "
                     f"{row['speedup']:.2f}x | {row['agreement']:.2%} | {row['decisions']} | "
                     f"{'yes' if row['passes'] else 'no'} |")
    for name in ("int8", "bfloat16", "bf16_weights"):
        lines += ["", f"{name} agreement by prompt: " + ", ".join(
            f"{k} {v:.1%}" for k, v in sw["rows"][name]["agreement_by_prompt"].items())]
    lines += ["", *summary["verdict"], ""]
    path.write_text("\n".join(lines))


def verdict(summary: dict[str, Any]) -> list[str]:
    rows = summary["switches"]["rows"]
    out = []
    for name, what in (("int8", "int8 dynamic quantization of every linear layer"),
                       ("bfloat16", "teacher.precision bfloat16 (autocast, float32 weights)"),
                       ("bf16_weights", "bfloat16 weights and activations")):
        r = rows[name]
        out.append(f"- {what}: {r['speedup']:.2f}x at {r['agreement']:.1%} agreement: "
                   f"{'meets' if r['passes'] else 'misses'} the target "
                   f"(>= {TARGET_SPEEDUP}x at >= {TARGET_AGREEMENT:.0%}).")
    for name, what in (("no_length_bucketing", "length bucketing (on by default)"),
                       ("no_prefix_cache", "the prefix KV cache (on by default; the "
                        "channel timing prompt always keeps it)")):
        r = rows[name]
        out.append(f"- {what}: switching it off runs at {r['speedup']:.2f}x the default "
                   f"({1 / max(r['speedup'], 1e-9):.2f}x is what it gives).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=800, help="the demo's corpus size")
    parser.add_argument("--probe", type=int, default=96, help="probe texts (the engine's "
                        "teacher.probe_size)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--load-reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    src = resolve(DEFAULT_TEACHER, CACHE / "models")
    started_load = os.getloadavg()[0]
    print("load times ...", flush=True)
    load_s = measure_load(src, args.load_reps)
    print(f"  gguf {load_s['gguf']} s, converted {load_s['converted']} s", flush=True)
    texts = probe_texts(args.corpus, args.probe)
    pool = prompt_pool(TaskConfig(**TASKS["crisis"]), [])[0]
    fp32 = HFTeacher(src, "cpu", convert_cache=CACHE / "models")
    int8 = HFTeacher(src, "cpu", convert_cache=CACHE / "models", quantize="int8")
    print("switches ...", flush=True)
    bf16 = HFTeacher(src, "cpu", precision="bfloat16", convert_cache=CACHE / "models")
    switches = run_switches(fp32, int8, bf16, bf16_weights(src), texts, pool, args.reps)
    summary: dict[str, Any] = {
        "command": "make bench-teacher  # python bench/teacher.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other "
                   f"work), no GPU, Python {platform.python_version()}, torch "
                   f"{torch.__version__}; load average {started_load:.1f} at start, "
                   f"{os.getloadavg()[0]:.1f} at end",
        "torch_threads": torch.get_num_threads(), "texts": len(texts),
        "load": load_s, "switches": switches,
    }
    summary["verdict"] = verdict(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher.json").write_text(json.dumps(summary, indent=2))
    write_markdown(summary, args.out / "teacher.md")
    print("\n".join(summary["verdict"]))


if __name__ == "__main__":
    main()

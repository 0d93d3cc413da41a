"""`make demo`: distil a crisis detector from unlabeled news on this machine, end to end.

Starts embedded Tailor (SQLite + filesystem broker + one worker), uploads news messages from
the disaster-response corpus without their labels, a labeled eval set from its test split,
submits a job, shows live progress, classifies a few headlines, compares teacher and student,
stops the services, and prints one JSON summary as the last line of stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.fetch_assets import fetch_corpus  # noqa: E402

HEADLINES = [
    "7.8 magnitude earthquake flattens buildings, hundreds feared trapped",
    "Flash floods sweep away homes as rivers burst their banks",
    "Central bank holds interest rates steady for third month",
    "Local team clinches championship in overtime thriller",
    "Cholera outbreak spreads in camps for displaced families",
]
TASK = {
    "labels": [
        {"name": "crisis", "description": "the message is about a disaster, emergency, "
         "humanitarian crisis, aid need or its aftermath"},
        {"name": "not_crisis", "description": "the message is about something else: politics, "
         "economy, sport, culture, routine news"},
    ],
    "instruction": "You screen news for an emergency-response team.",
}


def load_messages(csv_path: Path, n_train: int, n_eval: int, seed: int
                  ) -> tuple[list[str], list[dict[str, str]]]:
    """News-genre train texts (labels dropped) and a labeled test-split eval set."""
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["genre"] == "news"]
    rng = random.Random(seed)
    train = [r["message"] for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test" and r["related"] in ("0", "1")]
    rng.shuffle(train)
    rng.shuffle(test)
    eval_set = [{"text": r["message"], "label": "crisis" if r["related"] == "1" else "not_crisis"}
                for r in test[:n_eval]]
    return train[:n_train], eval_set


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TAILOR_HOME": str(home), "TAILOR_PORT": str(port),
           "PYTHONUNBUFFERED": "1"}
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Tailor exited at start; see {home / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("Tailor did not become ready in 120 s")


def watch(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Print phase and percent as the job runs; return the final job."""
    last_step, last_pct = None, -100.0
    tty = sys.stdout.isatty()
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        pct, step = job["progress"] * 100, (job["state"], job["phase"])
        line = f"  [{pct:5.1f}%] {job['state']:<11} {job['phase'] or ''}"
        # On a terminal, redraw one line; in a log, one line per phase or 5 points.
        if tty:
            print("\r" + line.ljust(60), end="", flush=True)
        elif step != last_step or pct - last_pct >= 5:
            print(line, flush=True)
            last_step, last_pct = step, pct
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if tty:
                print()
            return job
        time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=800, help="unlabeled training messages")
    parser.add_argument("--eval", type=int, default=400, help="labeled eval messages")
    parser.add_argument("--port", type=int, default=int(os.environ.get("TAILOR_PORT", 8765)))
    parser.add_argument("--home", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default=None, help="distillation strategy (default: "
                        "the service default)")
    args = parser.parse_args()

    started = time.perf_counter()
    csv_path = fetch_corpus()
    train, eval_set = load_messages(csv_path, args.train, args.eval, args.seed)
    if args.home.exists():
        shutil.rmtree(args.home)
    args.home.mkdir(parents=True)
    print(f"Tailor demo: {len(train)} unlabeled news messages, {len(eval_set)} labeled for "
          f"evaluation\nstarting embedded services on 127.0.0.1:{args.port} ...", flush=True)
    server = start_server(args.home, args.port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120) as client:
            corpus = client.post("/datasets", json={
                "name": "news-unlabeled", "records": [{"text": t} for t in train]}).json()
            evals = client.post("/datasets", json={"name": "news-eval",
                                                   "records": eval_set}).json()
            body: dict[str, Any] = {"name": "crisis", "task": TASK,
                                    "data": {"dataset_id": corpus["id"],
                                             "eval_dataset_id": evals["id"]}}
            if args.strategy:
                body["distillation"] = {"strategy": args.strategy}
            resp = client.post("/jobs", json=body)
            resp.raise_for_status()
            job_id = resp.json()["id"]
            print(f"job {job_id} submitted; live progress:", flush=True)
            job = watch(client, job_id)
            if job["state"] != "succeeded":
                raise SystemExit(f"job ended {job['state']}: {job['error']}")
            model = job["model"]
            out = client.post("/classify", json={"model": model["name"],
                                                 "texts": HEADLINES}).json()
            print(f"\nclassifying with {model['name']}:{model['version']}")
            for text, result in zip(HEADLINES, out["results"], strict=True):
                score = result["scores"][result["label"]]
                print(f"  {result['label']:<10} {score:5.2f}  {text}")
            metrics, warnings = job["metrics"], job.get("warnings") or []
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    teacher, student = metrics["teacher"], metrics["student"]
    t_f1, s_f1 = teacher["eval"]["macro_f1"], student["eval"]["macro_f1"]
    print(f"\n{'':10}{'macro-F1':>10}{'ms/text':>10}   (eval n={student['eval']['n']}, "
          f"batch {student['latency_batch']})")
    print(f"{'teacher':10}{t_f1:>10.3f}{teacher['ms_per_text']:>10.1f}   "
          f"{teacher['total_params'] / 1e6:.0f}M params")
    print(f"{'student':10}{s_f1:>10.3f}{student['ms_per_text']:>10.1f}   "
          f"{student['trainable_params'] / 1e3:.0f}k trainable of "
          f"{student['total_params'] / 1e6:.0f}M")
    print(f"agreement with the teacher on held-out texts: {student['holdout_agreement']:.3f}; "
          f"demo took {time.perf_counter() - started:.0f} s; services stopped")
    passes = metrics.get("teacher_passes") or {}
    if passes:
        print(f"teacher passes: {passes['requested']} for {passes['texts']} texts "
              f"({passes['per_text']:.2f} per text; {passes['computed']} computed, the rest "
              f"from the teacher cache; by stage: "
              + ", ".join(f"{k} {v['requested']}" for k, v in passes["by_stage"].items()) + ")")
    for w in warnings:
        print(f"WARNING {w['code']}: {w['message']}")
    print(json.dumps({
        "model": model["name"], "version": model["version"],
        "teacher": {"macro_f1": round(t_f1, 4), "ms_per_text": teacher["ms_per_text"],
                    "passes_per_text": passes.get("per_text")},
        "student": {"macro_f1": round(s_f1, 4), "ms_per_text": student["ms_per_text"]},
        "warnings": [w["code"] for w in warnings],
    }))


if __name__ == "__main__":
    main()

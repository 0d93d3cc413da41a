"""The two comparison servers of the serving benchmark, each a minimal FastAPI app.

- naive: the student as most people would serve it — the LoRA adapter merged into its own
  copy of the base, one plain forward per request in FastAPI's threadpool, no batching
  across requests (what a transformers feature-extraction pipeline does, minus its overhead);
- teacher: the LLM teacher scoring each request's texts with the job's prompt.

Both answer POST /classify {"texts": [...]} with one result per text, like Tailor.
Run: python bench/baselines.py naive|teacher --student-dir DIR --port N
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.distill.annotate import option_probs  # noqa: E402
from worker.distill.calibration import probabilities  # noqa: E402
from worker.distill.config import TaskConfig  # noqa: E402
from worker.distill.prompts import default_prompts  # noqa: E402
from worker.distill.sources import resolve  # noqa: E402
from worker.distill.student import (  # noqa: E402
    attach,
    head_from,
    load_base,
    mean_pool,
    read_artifact,
)
from worker.distill.teachers import HFTeacher  # noqa: E402


class Texts(BaseModel):
    texts: list[str]


def _results(probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    return {"results": [{"label": labels[int(p.argmax())],
                         "scores": {lab: float(x) for lab, x in zip(labels, p, strict=True)}}
                        for p in probs]}


def naive_app(student_dir: Path, cache: Path) -> FastAPI:
    artifact = read_artifact(student_dir)
    meta = artifact.meta
    encoder, tokenizer = load_base(resolve(meta["base_model"], cache / "models"))
    model = attach(encoder, artifact, "student").merge_and_unload().eval()
    head, temperature = head_from(artifact), float(meta["temperature"])
    app = FastAPI()

    @app.post("/classify")
    def classify(body: Texts) -> dict[str, Any]:
        with torch.no_grad():
            enc = tokenizer(body.texts, padding=True, truncation=True,
                            max_length=int(meta["max_length"]), return_tensors="pt")
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            logits = head(mean_pool(out.last_hidden_state, enc["attention_mask"]))
            probs = probabilities(logits, temperature, bool(meta["multi_label"])).numpy()
        return _results(probs, artifact.labels)

    return app


def teacher_app(student_dir: Path, cache: Path, lineage: dict[str, Any]) -> FastAPI:
    task = TaskConfig(**lineage["config"]["task"])
    teacher = HFTeacher(resolve(lineage["teacher"]["uri"], cache / "models"), device="cpu",
                        convert_cache=cache / "models")
    prompt = default_prompts(task)[0]
    app = FastAPI()

    @app.post("/classify")
    def classify(body: Texts) -> dict[str, Any]:
        scores = teacher.score(prompt, body.texts, batch_size=len(body.texts),
                               want_hidden=False)
        return _results(option_probs(scores), task.label_names)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["naive", "teacher"])
    parser.add_argument("--student-dir", type=Path, required=True)
    parser.add_argument("--lineage", type=Path, help="JSON lineage of the version (teacher)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "naive":
        app = naive_app(args.student_dir, args.cache)
    else:
        app = teacher_app(args.student_dir, args.cache, json.loads(args.lineage.read_text()))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

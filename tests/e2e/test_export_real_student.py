"""A real student leaves Tailor: both README examples of its exports (ONNX in a virtual
environment holding only onnxruntime, tokenizers and numpy; Hugging Face with transformers and
torch), run in fresh processes outside the project on real messages of the disaster-response
corpus, answer as /classify does: labels agree on >= 99% of texts, probabilities within 0.02."""

from __future__ import annotations

import csv
import random
import subprocess
import sys

import pytest

from tests.fixtures.exports import clean_env, onnx_venv, run_example, unpack
from tests.fixtures.real_student import register_trained
from tests.support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.realmodels]

CORPUS = ROOT / "var" / "data" / "disaster_response_messages.csv"
N_TEXTS = 200
MIN_AGREEMENT, MAX_PROB_DIFF = 0.99, 0.02


def real_texts() -> list[str]:
    """Test-split messages (one line each, as the examples read them), shuffled once."""
    with CORPUS.open(encoding="utf-8-sig", newline="") as fh:
        texts = [r["message"] for r in csv.DictReader(fh) if r["split"] == "test"]
    texts = [t for t in texts if t.strip() and "\n" not in t and "\r" not in t]
    random.Random(0).shuffle(texts)
    return texts[:N_TEXTS]


def compare(got: list[dict], want: list[dict]) -> tuple[float, float]:
    """Label agreement and the largest |probability difference| over all texts and labels."""
    assert len(got) == len(want)
    agree = sum(g["label"] == w["label"] for g, w in zip(got, want, strict=True)) / len(want)
    diff = max(abs(g["scores"][k] - w["scores"][k])
               for g, w in zip(got, want, strict=True) for k in w["scores"])
    return agree, diff


def test_both_exports_answer_as_classify_outside_tailor(real_client, tmp_path):
    register_trained("crisis")
    texts = real_texts()
    want = real_client.post("/classify", json={"model": "crisis:1", "texts": texts}).json()
    want = want["results"]
    assert {w["label"] for w in want} == {"crisis", "calm"}  # the texts exercise both labels

    python = onnx_venv()
    isolated = subprocess.run([python, "-c", "import torch"], capture_output=True,
                              env=clean_env(), cwd=tmp_path, check=False)
    assert isolated.returncode != 0  # the ONNX example's environment has no torch

    for fmt, runner in (("onnx", python), ("hf", sys.executable)):
        resp = real_client.get(f"/models/crisis/versions/1/export?format={fmt}")
        assert resp.status_code == 200, resp.text
        folder = unpack(resp.content, tmp_path / fmt)
        got = run_example(runner, folder, texts)
        agreement, diff = compare(got, want)
        assert agreement >= MIN_AGREEMENT, (fmt, agreement)
        assert diff <= MAX_PROB_DIFF, (fmt, diff)
        assert [g["truncated"] for g in got] == [w["truncated"] for w in want]

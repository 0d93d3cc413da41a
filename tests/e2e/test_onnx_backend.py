"""The ONNX Runtime serving backend on real students (all-MiniLM-L6-v2 + LoRA): fp32 answers
as the torch path does, int8 only where the version's held-out texts keep its labels, and
the registry records which precision each version serves with and the agreement measured.

Two versions, each registered under a real job whose corpus is 600 disaster-response
messages (so each has the job's 90 held-out texts): a student trained on labeled headlines,
and a multi-label version with a random head whose probabilities sit near 0.5, where int8's
small shifts flip labels (about 10% measured)."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import DEFAULT_STUDENT, get_settings
from app.core.db import session_scope
from app.models import ModelVersion
from app.serving.holdout import heldout_texts
from tests.fixtures.real_student import CALM, CRISIS, register_trained
from tests.fixtures.versions import register_tiny
from tests.support import ROOT, job_body
from worker.distill.checks import check_corpus

pytestmark = [pytest.mark.e2e, pytest.mark.realmodels]

CORPUS_CSV = ROOT / "var" / "data" / "disaster_response_messages.csv"
HAZARDS = ("flood", "fire", "storm")


def messages(n: int, split: str) -> list[str]:
    assert CORPUS_CSV.exists(), "run scripts/fetch_assets.py (make test does)"
    with CORPUS_CSV.open(encoding="utf-8-sig", newline="") as fh:
        texts = [r["message"] for r in csv.DictReader(fh) if r["split"] == split]
    random.Random(0).shuffle(texts)
    return texts[:n]


@pytest.fixture
def home(embedded: Path, monkeypatch: pytest.MonkeyPatch, tiny_models: tuple[str, str]
         ) -> Iterator[Path]:
    """Real model cache; `crisis` (trained) and `hazards` (random, multi-label) v1, each
    under a job of its own on one 600-text corpus."""
    monkeypatch.setenv("TAILOR_CACHE_DIR",
                       os.environ.get("TAILOR_CACHE_DIR", str(ROOT / "var" / "cache")))
    monkeypatch.setenv("TAILOR_SERVING_MAX_QUEUE_DELAY_MS", "60000")
    get_settings.cache_clear()
    with app_client(monkeypatch) as client:
        resp = client.post("/datasets", json={"name": "corpus", "records": [
            {"text": t} for t in messages(600, "train")]})
        assert resp.status_code == 201, resp.text
        corpus = resp.json()["id"]
        jobs = {}
        for name in ("crisis", "hazards"):
            resp = client.post("/jobs", json=job_body(name, corpus, *tiny_models))
            assert resp.status_code == 202, resp.text
            jobs[name] = resp.json()["id"]
    register_trained("crisis")
    register_tiny(DEFAULT_STUDENT, name="hazards", labels=HAZARDS, multi_label=True, seed=6,
                  max_length=128)
    with session_scope() as db:  # as if each job had registered its version
        for name, job_id in jobs.items():
            db.query(ModelVersion).filter_by(model_name=name, version=1).one().job_id = job_id
    yield embedded
    get_settings.cache_clear()


def app_client(monkeypatch: pytest.MonkeyPatch, **settings: str) -> TestClient:
    """A fresh in-process app whose Settings have `settings` (and no other backend ones)."""
    from app.main import create_app

    for key in ("TAILOR_SERVING_BACKEND", "TAILOR_SERVING_INT8_MIN_TEXTS",
                "TAILOR_SERVING_INT8_MIN_AGREEMENT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return TestClient(create_app())


def scores(client: TestClient, model: str, texts: list[str]) -> tuple[np.ndarray, list[Any]]:
    resp = client.post("/classify", json={"model": model, "texts": texts})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    labels = sorted(results[0]["scores"])
    return (np.array([[r["scores"][k] for k in labels] for r in results]),
            [r["label"] for r in results])


def serving(client: TestClient, model: str) -> dict[str, Any]:
    resp = client.get(f"/models/{model}/versions/1")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["serving"] or {})


def test_onnx_answers_as_torch_and_int8_only_where_held_out_labels_hold(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = heldout_texts("crisis", 1, 1000)  # 15% of the corpus, as the engine split it
    assert len(held) == 90 and set(held) <= set(check_corpus(messages(600, "train")))
    texts = CRISIS + CALM + messages(40, "validation")
    with app_client(monkeypatch, TAILOR_SERVING_BACKEND="torch") as client:
        torch_probs, torch_labels = scores(client, "crisis", texts)
        _, held_torch = scores(client, "crisis", held)
        assert serving(client, "crisis") == {}  # never compiled: nothing recorded

    # fp32: with more held-out texts required than exist, int8 is never used
    with app_client(monkeypatch, TAILOR_SERVING_BACKEND="onnx",
                    TAILOR_SERVING_INT8_MIN_TEXTS="1000") as client:
        onnx_probs, onnx_labels = scores(client, "crisis", texts)
        assert client.app.state.pool.served["crisis:1"].precision == "fp32"
        recorded = serving(client, "crisis")
    assert np.abs(onnx_probs - torch_probs).max() <= 0.02
    assert onnx_labels == torch_labels
    assert recorded["precision"] == "fp32" and recorded["agreement_texts"] == 90
    measured = recorded["int8_agreement"]
    assert 0.95 <= measured <= 1.0

    with app_client(monkeypatch, TAILOR_SERVING_BACKEND="onnx",
                    TAILOR_SERVING_INT8_MIN_TEXTS="50",
                    TAILOR_SERVING_INT8_MIN_AGREEMENT="0.95") as client:
        _, held_int8 = scores(client, "crisis", held)
        scores(client, "hazards", texts[:2])
        hazards = serving(client, "hazards")
        assert client.app.state.pool.served["crisis:1"].precision == "int8"
        assert client.app.state.pool.served["hazards:1"].precision == "fp32"
        assert serving(client, "crisis") == {"precision": "int8", "int8_agreement": measured,
                                             "agreement_texts": 90}
        explain = client.post("/classify", json={"model": "crisis", "texts": ["flood"],
                                                 "explain": True})
        assert explain.status_code == 409
        assert explain.json()["error"]["code"] == "explain_unavailable"
    # the recorded agreement is what int8 answers at /classify: torch (= fp32) labels kept
    same = np.mean([a == b for a, b in zip(held_torch, held_int8, strict=True)])
    assert same == pytest.approx(measured, abs=1.01 / 90)  # a torch/fp32 tie at most
    # a real version where int8 fails: refused, fp32 served, the failing agreement recorded
    assert hazards["precision"] == "fp32" and hazards["agreement_texts"] == 90
    assert hazards["int8_agreement"] < 0.95

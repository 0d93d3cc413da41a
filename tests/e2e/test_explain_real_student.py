"""Explanations of a real student (all-MiniLM-L6-v2 + LoRA, trained here in seconds on a
few labeled headlines): the crisis words of an obvious crisis text carry more of the
"crisis" label than its stop words do."""

from __future__ import annotations

import os

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import DEFAULT_STUDENT, get_settings
from app.core.db import session_scope
from app.models.base import new_id
from app.registry.service import register_version
from tests.fixtures.versions import run_result
from tests.support import ROOT
from worker.distill.config import StudentConfig
from worker.distill.sources import resolve
from worker.distill.student import build_student, save_student

pytestmark = [pytest.mark.e2e, pytest.mark.realmodels]

CRISIS = ["Earthquake kills dozens and destroys homes", "Floods force thousands to flee",
          "Wildfire burns villages, residents evacuated", "Cyclone leaves hundreds dead",
          "Bomb attack injures people in the market", "Cholera outbreak spreads in camps",
          "Tsunami warning after strong earthquake", "Landslide buries houses after rain",
          "Rescue teams search rubble for survivors", "Hurricane floods the coast"]
CALM = ["The team won the football match", "Shares rose on strong earnings",
        "A new school opened in the town", "The festival drew large crowds",
        "The minister visited a factory", "Concert tickets sold out in minutes",
        "The museum shows a new painting", "Local bakery wins a prize for bread",
        "Students graduate at the university", "The band released a new album"]
TEXT = "The earthquake and the floods killed hundreds of people in the city"
CRISIS_WORDS = {"earthquake", "floods", "killed"}
STOP_WORDS = {"the", "and", "of", "in"}


def _train_and_register(name: str) -> None:
    settings = get_settings()
    base = resolve(DEFAULT_STUDENT, settings.cache / "models")
    cfg = StudentConfig(max_length=32)
    student, tokenizer = build_student(base, cfg, num_labels=2, proj_dim=None, seed=0)
    batch = tokenizer(CRISIS + CALM, padding=True, truncation=True, max_length=32,
                      return_tensors="pt")
    target = torch.tensor([0] * len(CRISIS) + [1] * len(CALM))
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                                  lr=3e-3)
    student.train()
    for _ in range(25):
        logits, _pooled = student(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    job_id = new_id("job")
    out = settings.artifacts / "jobs" / job_id / "student"
    meta = {"labels": ["crisis", "calm"], "multi_label": False, "base_model": DEFAULT_STUDENT,
            "base_sha256": base.sha256, "max_length": 32, "pooling": "mean",
            "adapter": {"type": "lora", "r": cfg.adapter.r, "alpha": cfg.adapter.lora_alpha,
                        "dropout": cfg.adapter.dropout,
                        "target_modules": sorted(
                            student.encoder.peft_config["default"].target_modules)},
            "temperature": 1.0}
    files = save_student(student, out, meta)
    result = run_result(out, files, DEFAULT_STUDENT, base.sha256, ["crisis", "calm"], False,
                        job_id)
    with session_scope() as db:
        register_version(db=db, job_id=job_id, name=name, result=result,
                         artifacts_root=settings.artifacts)


@pytest.fixture
def real_client(embedded, monkeypatch):
    from app.main import create_app

    monkeypatch.setenv("TAILOR_CACHE_DIR",
                       os.environ.get("TAILOR_CACHE_DIR", str(ROOT / "var" / "cache")))
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def test_attributions_point_at_the_crisis_words_not_the_stop_words(real_client):
    _train_and_register("crisis")
    resp = real_client.post("/classify", json={"model": "crisis", "texts": [TEXT],
                                               "explain": True})
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert result["label"] == "crisis", result["scores"]
    explanation = result["explanation"]
    assert explanation["label"] == "crisis"
    by_word: dict[str, list[float]] = {}
    for token in explanation["tokens"]:
        word = TEXT[token["start"]:token["end"]].lower()
        assert word == token["token"]  # offsets point into the text as sent
        by_word.setdefault(word, []).append(token["attribution"])
    assert set(by_word) >= CRISIS_WORDS | STOP_WORDS
    crisis = [a for w in CRISIS_WORDS for a in by_word[w]]
    stop = [a for w in STOP_WORDS for a in by_word[w]]
    mean_crisis, mean_stop = sum(crisis) / len(crisis), sum(stop) / len(stop)
    assert mean_crisis > 0, by_word
    assert mean_crisis > 3 * abs(mean_stop), by_word
    assert min(crisis) > max(abs(a) for a in stop), by_word

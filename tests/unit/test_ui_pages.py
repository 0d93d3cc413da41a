"""The dashboard's HTML: auth on data, what the job and model pages show, escaping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from app.core.db import session_scope
from app.models import Job, JobEvent
from app.models.base import new_id, utcnow
from app.models.model_alias import ModelAlias
from app.models.model_version import ModelVersion
from app.models.registered_model import RegisteredModel

EVIL = "<script>alert(1)</script>"


def report(f1: float, ece: float, **extra: Any) -> dict[str, Any]:
    return {"n": 4, "accuracy": f1, "macro_f1": f1, "ece": ece,
            "per_class": {"crisis": {"precision": f1, "recall": f1, "f1": f1, "support": 2},
                          EVIL: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}},
            "confusion": {"labels": ["crisis", EVIL], "matrix": [[2, 0], [1, 1]]}, **extra}


METRICS = {
    "teacher": {"eval": report(0.5, 0.2), "ms_per_text": 115.0},
    "student": {"eval": report(0.75, 0.05, reliability={
        "edges": [0, 0.5, 1.0], "confidence": [0.4, 0.8], "accuracy": [0.5, 0.75],
        "count": [1, 3]}), "ms_per_text": 10.3, "holdout_agreement": 0.9},
    "prompts": [{"name": "light", "template": "Is {text} bad?", "weight": 0.2},
                {"name": "heavy", "template": f"{EVIL} {{text}}", "weight": 0.8}],
    "phases": {"easy": {"steps": 3, "losses": [2.0, 1.5, 1.2]}},
    "corpus": {"texts": 48, "train": 41},
}


def make_job(state: str = "distilling", metrics: dict[str, Any] | None = None,
             live_losses: list[float] = ()) -> str:
    job_id, t0 = new_id("job"), utcnow() - timedelta(seconds=30)
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state=state, phase="full", progress=0.7,
                   spec={"name": "crisis"}, metrics=metrics or {}, attempts=1,
                   created_at=t0))
        steps = [("queued", None, None), ("annotating", "annotate", None),
                 *[("distilling", "full", {"loss": loss}) for loss in live_losses]]
        for i, (st, phase, data) in enumerate(steps):
            db.add(JobEvent(job_id=job_id, kind="progress", state=st, phase=phase,
                            progress=0.1 * i, data=data, created_at=t0 + timedelta(seconds=i)))
    return job_id


def test_shells_are_open_but_every_part_needs_the_key(client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_API_KEYS", "admin-key,reader:classify")
    get_settings.cache_clear()
    shell = client.get("/ui")
    assert shell.status_code == 200 and 'data-part="/ui/parts/jobs?offset=0"' in shell.text
    assert "script-src 'self'" in shell.headers["content-security-policy"]
    assert client.get("/ui/static/tailor.js").headers["content-type"].startswith(
        "text/javascript")
    assert client.get("/ui/static/..%2Fviews.py").status_code == 404
    for part in ("/ui/parts/jobs", "/ui/parts/models", "/ui/parts/jobs/job_x"):
        assert client.get(part).json()["error"]["code"] == "unauthorized"
    reader = {"Authorization": "Bearer reader"}
    assert client.get("/ui/parts/models", headers=reader).status_code == 200
    assert client.get("/ui/parts/jobs", headers=reader).status_code == 403  # needs train
    ok = client.get("/ui/parts/jobs", headers={"Authorization": "Bearer admin-key"})
    assert ok.status_code == 200 and "No jobs yet" in ok.text


def test_job_page_shows_phases_prompts_and_metrics_with_user_text_escaped(client):
    job_id = make_job(metrics=METRICS, live_losses=[3.0, 2.5, 2.2])
    html = client.get(f"/ui/parts/jobs/{job_id}").text
    assert EVIL not in html and "&lt;script&gt;" in html
    # A recorded phase and a phase still running (losses from its progress events).
    assert 'data-phase="easy"' in html and 'aria-label="easy loss per step"' in html
    assert 'data-phase="full"' in html and 'aria-label="full loss per step"' in html
    assert html.index(">heavy<") < html.index(">light<"), "prompts by weight, heaviest first"
    assert '<tr data-metric="macro_f1">' in html
    row = html[html.index('<tr data-metric="macro_f1">'):]
    assert row.index('class="better"') > row.index("0.500"), "the student's 0.750 wins"
    assert html.count('class="bin"') == 2, "student reliability: two non-empty bins"
    assert "only the ECE" in html, "the teacher side has no per-bin data"
    assert "annotate" in html and "queued" in html  # the timeline
    assert 'data-cancel="' in html, "a running job can be cancelled"


def test_jobs_list_marks_running_jobs_for_live_updates(client):
    running, done = make_job("distilling"), make_job("succeeded")
    html = client.get("/ui/parts/jobs").text
    assert f'data-job-id="{running}" data-final="false"' in html
    assert f'data-job-id="{done}" data-final="true"' in html


def test_model_page_shows_versions_aliases_card_and_try_it(client):
    with session_scope() as db:
        db.add(RegisteredModel(name="crisis", latest_version=2))
        db.flush()  # no ORM relationships: insert the parent rows first
        for v in (1, 2):
            db.add(ModelVersion(model_name="crisis", version=v, artifact_path=f"crisis/{v}",
                                files={"head.safetensors": "ab" * 32}, base_model="minilm",
                                labels=["crisis", EVIL], metrics=METRICS, lineage={},
                                card=f"# crisis v{v}\n\n{EVIL}\n\n| a | b |\n|---|---|\n| 1 | 2 |"))
        db.flush()
        db.add(ModelAlias(model_name="crisis", alias="production", version=1))
    html = client.get("/ui/parts/models/crisis").text
    assert 'data-model="crisis:2"' in html, "the latest version by default"
    assert "<h1>crisis v2</h1>" in html and "<table>" in html, "the card as HTML"
    assert EVIL not in html, "raw HTML in a card is shown as text"
    assert "production" in html and html.count('class="cell"') == 8  # two 2x2 matrices
    assert 'data-model="crisis:1"' in client.get("/ui/parts/models/crisis?version=1").text
    assert client.get("/ui/parts/models/ghost").status_code == 404


@pytest.mark.parametrize("path", ["/ui", "/ui/models", "/ui/jobs/job_x", "/ui/models/crisis",
                                  "/ui/datasets", "/ui/submit", "/ui/submit?from=job_x"])
def test_every_shell_loads_the_script_and_names_its_part(client, path):
    html = client.get(path).text
    assert '<script src="/ui/static/tailor.js" defer></script>' in html
    assert 'id="part" data-part="/ui/parts/' in html and 'id="key-dialog"' in html


def test_the_clone_page_prefills_a_visible_job_and_refuses_odd_ids(client):
    job_id = make_job("succeeded")
    html = client.get(f"/ui/parts/submit?from={job_id}").text
    assert 'id="spec-json"' in html and f'cloned from <a href="/ui/jobs/{job_id}">' in html
    assert client.get("/ui/parts/submit?from=job_nope").status_code == 404
    assert client.get("/ui/submit?from=..%5C..%5Ckeys").status_code == 404  # stays a job id
    assert '"dataset_id"' in client.get("/ui/parts/submit").text  # a skeleton without one

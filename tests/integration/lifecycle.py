"""The user's path, over HTTP: upload, submit, watch, registry, classify, aliases, events."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fixtures.tiny import corpus
from tests.support import job_body, wait_job

EVAL = [("earthquake killed hundreds", "crisis"), ("football team won", "calm"),
        ("flood water rose", "crisis"), ("concert opened", "calm")]


def upload(client: httpx.Client) -> tuple[str, str]:
    ds = client.post("/datasets", json={"name": "corpus",
                                        "records": [{"text": t} for t in corpus(48)]})
    assert ds.status_code == 201, ds.text
    ev = client.post("/datasets", json={"name": "eval", "records": [
        {"text": t, "label": lab} for t, lab in EVAL]})
    assert ev.status_code == 201, ev.text
    return ds.json()["id"], ev.json()["id"]


def run_lifecycle(client: httpx.Client, tiny_models: tuple[str, str],
                  name: str = "crisis") -> dict[str, Any]:
    ds, ev = upload(client)
    resp = client.post("/jobs", json=job_body(name, ds, *tiny_models, eval_dataset_id=ev))
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["location"] == f"/jobs/{job_id}"
    job = wait_job(client, job_id, timeout=240)
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0 and job["error"] is None
    assert job["model"] == {"name": name, "version": 1}
    m = job["metrics"]
    assert m["teacher"]["eval"]["n"] == len(EVAL) and m["student"]["eval"]["n"] == len(EVAL)
    assert "macro_f1" in m["student"]["eval"] and "holdout_agreement" in m["student"]

    models = client.get("/models").json()["models"]
    assert [x["name"] for x in models] == [name] and models[0]["latest_version"] == 1
    version = client.get(f"/models/{name}/versions/1").json()
    assert set(version["files"]) == {"adapter.safetensors", "head.safetensors", "student.json"}
    assert version["lineage"]["job_id"] == job_id and version["card"].startswith(f"# {name} v1")
    assert client.get(f"/models/{name}").json()["versions"][0]["version"] == 1

    texts = ["earthquake killed thousands", "stock market rose today", "flood"]
    out = client.post("/classify", json={"model": name, "texts": texts})
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["model"] == name and body["version"] == 1 and len(body["results"]) == 3
    for result in body["results"]:
        assert result["label"] in ("crisis", "calm")
        assert abs(sum(result["scores"].values()) - 1.0) < 1e-4

    # 48 texts (41 train, 7 held out) and a 4-text eval set: too small to trust, and said so
    # on the job, the version and its card; the alias then moves only by force.
    codes = {w["code"] for w in job["warnings"]}
    assert {"corpus_too_small", "holdout_too_small", "eval_set_too_small"} <= codes, job
    assert version["warnings"] == job["warnings"] and "## Warnings" in version["card"]
    refused = client.put(f"/models/{name}/aliases/production", json={"version": 1})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_has_warnings"
    assert client.put(f"/models/{name}/aliases/production",
                      json={"version": 1, "force": True}).status_code == 200
    pinned = client.post("/classify", json={"model": f"{name}@production", "texts": texts})
    assert pinned.json()["results"] == body["results"]
    assert client.post("/classify", json={"model": f"{name}:1", "texts": texts}).status_code == 200
    archive = client.post(f"/models/{name}/versions/1/archive")  # production still serves it
    assert archive.status_code == 409 and archive.json()["error"]["code"] == "version_aliased"

    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data:")]
    events = [json.loads(line[5:]) for line in lines]
    assert events[-1] == {"state": "succeeded"}
    assert [e["state"] for e in events if e.get("kind") == "state"][0] == "queued"
    return job

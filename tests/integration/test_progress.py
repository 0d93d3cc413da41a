"""Estimates before running and counts while running, on a real embedded Tailor (`tailor serve`:
SQLite, the filesystem broker and one worker process) with the tiny fixture models."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny import corpus
from tests.support import Stack, job_body, make_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TAILOR = str(Path(sys.executable).with_name("tailor"))
# Big enough that annotation and training each outlast several throttled writes (1/s).
CORPUS = 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("progress") / "home"
    home.mkdir()
    stack = Stack(home, make_env(home))
    stack.start_serve([TAILOR, "serve"])
    yield stack
    stack.discard()


def tailor(server: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "TAILOR_URL": server.url, "COLUMNS": "200"}
    return subprocess.run([TAILOR, *args], env=env, capture_output=True, text=True, timeout=120,
                          cwd=server.home)


def job_count(http: httpx.Client) -> int:
    return len(http.get("/jobs", params={"limit": 200}).json()["jobs"])


def watch(http: httpx.Client, job_id: str, timeout: float = 300) -> list[tuple[float, dict]]:
    """Poll GET /jobs/{id} until it is final; (seconds, job) for every answer."""
    seen, start = [], time.monotonic()
    while time.monotonic() - start < timeout:
        job = http.get(f"/jobs/{job_id}").json()
        seen.append((time.monotonic(), job))
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return seen
        time.sleep(0.15)
    raise TimeoutError(f"job {job_id} did not finish: {seen[-1][1]['state']}")


def stage_readings(seen: list[tuple[float, dict]], stage: str) -> list[tuple[float, dict]]:
    return [(t, j["progress_detail"]) for t, j in seen
            if j["progress_detail"] and j["progress_detail"]["stage"] == stage]


def test_dry_run_then_a_running_job_shows_counts_rate_and_eta(server: Stack, tiny_models,
                                                              tmp_path):
    with server.client() as http:
        ds = http.post("/datasets", json={"name": "news", "records": [
            {"text": t} for t in corpus(CORPUS)]}).json()["id"]
        # Phases pinned: with "auto" the schedule is decided after annotation, so the
        # estimate's step count (every phase) would be an upper bound, not the count.
        body = job_body("progress", ds, *tiny_models, epochs=4, batch_size=4,
                        representations=True, progressive=True)
        body["teacher"]["batch_size"] = 1  # one text per teacher call: a slower count
        body["teacher"]["min_skill"] = 0  # tiny random models are at chance by design
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps(body))

        # --- the estimate: printed by the CLI, nothing created -----------------------
        before = job_count(http)
        dry = tailor(server, "jobs", "submit", str(spec), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: valid, nothing created (documented default)" in dry.stdout
        estimate = http.post("/jobs?dry_run=true", json=body).json()["estimate"]
        assert f"{estimate['teacher_calls']:,} teacher calls over {CORPUS} texts" in dry.stdout
        bad = tailor(server, "jobs", "submit", str(spec), "--dry-run", "--dataset",
                     "ds_0000000000000000")
        assert bad.returncode == 1 and "dataset_not_found" in bad.stderr
        as_json = tailor(server, "jobs", "submit", str(spec), "--dry-run", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == {"dry_run": True, "estimate": estimate}
        assert job_count(http) == before

        # --- the job: progress_detail while it runs ----------------------------------
        job = http.post("/jobs", json=body).json()
        seen = watch(http, job["id"])
        final = seen[-1][1]
        assert final["state"] == "succeeded", final["error"]
        assert final["progress_detail"] is None  # counts describe a running stage only
        for stage, unit, total in (("annotate", "texts", estimate["teacher_calls"]),
                                   ("distill", "steps", estimate["training_steps"])):
            readings = stage_readings(seen, stage)
            dones = [d["done"] for _, d in readings]
            # The tiny teacher answers a probe of hundreds of texts within the one-second
            # write limit, so annotation may show only two counts; training shows more.
            assert len(set(dones)) >= (2 if stage == "annotate" else 3), f"{stage}: {dones}"
            assert dones == sorted(dones), f"{stage}: done only grows"
            assert all(d["unit"] == unit and 0 <= d["done"] <= d["total"] for _, d in readings)
            # The estimate counts what progress counts against (refine: at its largest).
            assert readings[0][1]["total"] == total
            timed = [(t, d) for t, d in readings if d["eta_s"] is not None]
            assert timed, f"{stage}: no ETA ever"
            stage_end = readings[-1][0]
            for t, d in timed:
                assert d["rate_per_s"] > 0
                assert d["eta_s"] == pytest.approx((d["total"] - d["done"]) / d["rate_per_s"],
                                                   rel=0.02, abs=0.2)
                # sane: never wildly beyond what the stage actually still took
                assert d["eta_s"] <= 10 * (stage_end - t) + 10, (stage, d, stage_end - t)

        # --- the event stream carries the same counts --------------------------------
        with http.stream("GET", f"/jobs/{job['id']}/events") as stream:
            events = [json.loads(line[6:]) for line in stream.iter_lines()
                      if line.startswith("data: ") and '"progress_detail"' in line]
        counted = [e["data"]["progress_detail"] for e in events]
        assert {d["stage"] for d in counted} == {"annotate", "distill"}

        # --- the next estimate uses what this job measured ---------------------------
        again = http.post("/jobs?dry_run=true", json=body).json()["estimate"]
        assert again["basis"] == "measured on this worker class"
        metrics: dict[str, Any] = final["metrics"]
        scored = metrics["annotation"]["texts_scored"] / metrics["annotation"]["seconds"]
        assert again["rates"]["teacher_calls_per_s"]["value"] == pytest.approx(scored, rel=0.01)

        # The CLI sends its Idempotency-Key with a dry run: a key spent on another body is
        # refused as the real submission would refuse it (after the job above: this one
        # would fill the teacher cache the counts above are measured without).
        spent = http.post("/jobs", json={**body, "name": "progress-other"},
                          headers={"Idempotency-Key": "spent"})
        assert spent.status_code == 202, spent.text
        http.post(f"/jobs/{spent.json()['id']}/cancel")
        before = job_count(http)
        reused = tailor(server, "jobs", "submit", str(spec), "--dry-run", "--idempotency-key",
                        "spent")
        assert reused.returncode == 1 and "idempotency_mismatch" in reused.stderr
        assert tailor(server, "jobs", "submit", str(spec), "--dry-run", "--watch"
                      ).returncode == 2
        assert job_count(http) == before
    watched = tailor(server, "jobs", "watch", job["id"])
    assert watched.returncode == 0, watched.stderr
    assert " texts · " in watched.stdout and " steps · " in watched.stdout

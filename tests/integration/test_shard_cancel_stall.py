"""Two real workers on PostgreSQL + Redis share one job's teacher passes: a cancel stops
every shard of the job on both workers, and a worker whose teacher call hangs gives its
shard up after TAILOR_SHARD_STALL_SECONDS, so the job's coordinator redoes it and the job
finishes.

The teacher is tests/fixtures/latency_teacher.py (a fixed latency per request, counting the
requests of each worker's API key, and holding one key's requests on demand, unanswered).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time

import httpx
import pytest
import redis

from tests import support
from tests.fixtures.tiny import corpus
from tests.integration.faults import FAST, JobLog, submit, wait_state
from tests.support import Stack, free_port, job_body, wait_for, wait_job
from worker.distill.evaluate import LATENCY_BATCH
from worker.distill.prompts import default_prompts
from worker.distill.spec import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARD_TEXTS = 16
STALL_S = 3  # TAILOR_SHARD_STALL_SECONDS of both workers: a batch here takes ~0.1 s
HOLD_AFTER = 20  # > one shard: the held worker finishes a shard of the job first
QUIET_S = 2.0  # after the job is cancelled: no worker may ask the teacher within this
REMOTE_DONE = re.compile(r"annotation shard \d+ \(\d+ texts\) of (job_\w+) done by")


def test_cancel_stops_every_shard_and_a_stalled_shard_is_redone(distributed: Stack,
                                                                tiny_models):
    s = distributed
    port = free_port()
    server = s.spawn("teacher", [sys.executable, "-m", "tests.fixtures.latency_teacher",
                                 "--port", str(port), "--latency-ms", "50"])
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/stats", timeout=2).status_code == 200, 60,
             what="teacher server")
    s.env.update(FAST, TAILOR_ANNOTATION_SHARD_TEXTS=str(SHARD_TEXTS),
                 TAILOR_SHARD_STALL_SECONDS=str(STALL_S),
                 TAILOR_MODEL_SOURCES=f"{support.TEST_MODEL_SOURCES},openai+{base}")
    s.start_api()
    workers = {key: s.start_worker(env={"TAILOR_OPENAI_API_KEY": key}) for key in ("a", "b")}
    broker = redis.Redis.from_url(s.env["TAILOR_BROKER_URL"])
    try:
        with s.client() as client:
            wait_for(lambda: client.get("/readyz").json().get("workers") == 2, 120,
                     what="two workers beating")

            # 1. Cancelled while both workers annotate its shards.
            texts = corpus(200)
            body = job_body("cancelled", _dataset(client, texts),
                            f"openai+{base}/v1?model=fake", tiny_models[1], epochs=1)
            body["teacher"]["extra_labelers"] = []
            job_id = submit(client, body)
            wait_state(client, job_id, "annotating")
            start = _stats(base)["by_key"]
            wait_for(lambda: all(_stats(base)["by_key"].get(k, 0) > start.get(k, 0) + 20
                                 for k in workers), 120, interval=0.05,
                     what="both workers to annotate the job's shards")
            resp = client.post(f"/jobs/{job_id}/cancel")
            assert resp.status_code == 200, resp.text
            cancelled = wait_job(client, job_id, timeout=60)
            assert cancelled["state"] == "cancelled", cancelled
            time.sleep(1.0)  # a batch under way when the cancel was seen may finish
            asked = _stats(base)["requests"]
            time.sleep(QUIET_S)
            assert _stats(base)["requests"] == asked, "a worker kept annotating"
            # Every pass of the job ended: its stop key set, its folder gone, no lease left.
            stops = [k.decode().split(":")[2] for k in broker.keys("tailor:shards:*:stop")]
            assert stops, "no pass was stopped"
            assert not broker.keys("tailor:shard:*"), broker.keys("tailor:shard:*")
            folder = s.home / "artifacts" / "jobs" / job_id / "shards"
            assert not [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else True

            # 2. A later job on the same workers, where one worker's teacher call hangs.
            fresh = [f"{t} later" for t in corpus(120)]
            body["data"]["dataset_id"] = _dataset(client, fresh)
            body["name"] = "stalled"
            before = _stats(base)["answered"]
            job_id = submit(client, body)
            wait_state(client, job_id, "annotating")
            job = client.get(f"/jobs/{job_id}").json()
            coordinator = next(k for k, w in workers.items()
                               if job["worker"] == f"tailor-{w.popen.pid}@{_host(job)}")
            other = "b" if coordinator == "a" else "a"
            hold = _stats(base)["by_key"].get(other, 0) + HOLD_AFTER
            httpx.post(f"{base}/hold", json={"key": other, "after": hold})
            # Stuck mid-shard: its 21st request from now (and any after) is never answered.
            wait_for(lambda: _stats(base)["by_key"].get(other, 0) > hold, 120,
                     interval=0.05, what="the other worker to annotate and get stuck")
            job = wait_job(client, job_id, timeout=120)
    except BaseException:
        print(s.logs())
        raise
    finally:
        broker.close()
    assert job["state"] == "succeeded", (job["error"], s.logs())
    assert job["attempts"] == 1  # only the stalled shard was redone, not the job
    joblog = JobLog(s.env["TAILOR_DATABASE_URL"])
    try:
        assert joblog.versions(job_id) == 1
    finally:
        joblog.close()
    other_log = workers[other].log.read_text(errors="replace")
    assert job_id in REMOTE_DONE.findall(other_log), other_log[-3000:]  # both annotated it
    # Stuck mid-shard, the other worker gave its lease up instead of holding the job.
    assert "lease given up, the shard is redone elsewhere" in other_log, other_log[-3000:]
    # Each (prompt, text) of the job was answered once, but the stalled shard's texts that
    # its holder had answered before the hang (it stored nothing) and the engine's uncached
    # latency sample of the default prompt.
    prompt = default_prompts(load_config(job["spec"]).task)[0]
    sample = {_sha(prompt.render(t)) for t in fresh[:LATENCY_BATCH]}
    after = _stats(base)["answered"]
    again = {h: n - before.get(h, 0) for h, n in after.items()
             if n - before.get(h, 0) > 1 and h not in sample}
    assert len(again) <= SHARD_TEXTS, again
    workers[other].kill()  # its pool is still inside the held request
    assert server.popen.poll() is None


def _dataset(client: httpx.Client, texts: list[str]) -> str:
    resp = client.post("/datasets", json={"name": "news", "records": [{"text": t} for t in texts]})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _stats(base: str) -> dict:
    return httpx.get(f"{base}/stats", timeout=5).json()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _host(job: dict) -> str:
    return str(job["worker"]).split("@", 1)[1]

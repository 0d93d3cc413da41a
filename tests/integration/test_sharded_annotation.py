"""One job's teacher passes spread over two real workers (PostgreSQL + Redis), one of which
is SIGKILLed in the middle of a shard.

The teacher is tests/fixtures/latency_teacher.py, an OpenAI-compatible server that takes a
fixed time per request and counts every prompt it is asked; each worker calls it with its
own API key, so the server knows who asked what, and holds the second worker's requests
from its 21st on: that worker is stuck mid-shard when the test kills it. Then the server
starts failing: the next job ends with `teacher_unavailable`, and its retry asks only for
what was not annotated before.

Then (second test) a cancel stops every shard of a job on both workers, and a worker whose
teacher call hangs gives its shard up after TAILOR_SHARD_STALL_SECONDS, so the job's
coordinator redoes it and the job finishes.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from typing import Any

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
HOLD_AFTER = 20  # > one shard: the held worker has finished at least one shard by then
STALL_S = 3  # TAILOR_SHARD_STALL_SECONDS in the second test: a batch here takes ~0.1 s
QUIET_S = 2.0  # after a job is cancelled: no worker may ask the teacher within this
FAIL_AFTER = 150  # requests the teacher answers before it fails (within the judging passes)
REMOTE_DONE = re.compile(r"annotation shard \d+ \(\d+ texts\) of (job_\w+) done by")
COORDINATOR_DONE = re.compile(r"annotation shard \d+/\d+ \(\d+ texts\) done by the coordinator")


def test_sharded_annotation_on_two_workers_a_killed_shard_a_failing_teacher(distributed: Stack,
                                                                            tiny_models):
    s = distributed
    server, base, workers = _two_workers(s)
    texts = corpus(200)
    assert len(set(texts)) == len(texts)
    try:
        with s.client() as client:
            body = job_body("sharded", _dataset(client, texts), f"openai+{base}/v1?model=fake",
                            tiny_models[1], epochs=1)
            # The tiny random student would be a labeler at chance, vetoing the teacher.
            body["teacher"]["extra_labelers"] = []
            job_id = submit(client, body)
            coordinator, other = _hold_the_other(client, job_id, workers, base)
            workers[other].kill()
            job = wait_job(client, job_id, timeout=240)
    except BaseException:
        print(s.logs())
        raise
    _succeeded_once(s, job)  # the coordinator never died: only the shard was redone
    # Both workers annotated shards of this one job.
    other_log = workers[other].log.read_text(errors="replace")
    assert job_id in REMOTE_DONE.findall(other_log), other_log[-3000:]
    assert COORDINATOR_DONE.search(workers[coordinator].log.read_text(errors="replace"))
    stats = _stats(base)
    assert stats["by_key"][coordinator] > 0
    # Each (prompt, text) was asked once, except the killed shard's texts (asked again by
    # whoever redid it) and the engine's uncached latency sample of the default prompt.
    cfg = load_config(job["spec"])
    prompt = default_prompts(cfg.task)[0]
    sample = {_sha(prompt.render(t)) for t in texts[:LATENCY_BATCH]}
    again = {h: n for h, n in stats["asked"].items() if n > 1 and h not in sample}
    assert 0 < len(again) <= SHARD_TEXTS and set(again.values()) == {2}, again

    # A teacher server that keeps failing ends the next job with teacher_unavailable; what
    # was annotated before stays in the cache, so the same job again asks only for the rest.
    fresh = [f"{t} again" for t in texts[:120]]
    with s.client() as client:
        ds = client.post("/datasets", json={"name": "again",
                                            "records": [{"text": t} for t in fresh]})
        assert ds.status_code == 201, ds.text
        body["data"]["dataset_id"] = ds.json()["id"]
        httpx.post(f"{base}/fail", json={"after": FAIL_AFTER})
        failed = wait_job(client, submit(client, body), timeout=240)
        assert failed["state"] == "failed", failed
        error = failed["error"]
        assert error["code"] == "teacher_unavailable", error
        assert f"teacher openai:{base}/v1#fake kept failing" in error["message"], error
        assert "503" in error["message"], error
        done = int(re.search(r"(\d+) texts were annotated", error["message"]).group(1))
        assert 0 < done < FAIL_AFTER, error
        before = _stats(base)["answered"]
        httpx.post(f"{base}/fail", json={"after": 0})
        retried = wait_job(client, submit(client, body), timeout=240)
        assert retried["state"] == "succeeded", retried["error"]
    after = _stats(base)["answered"]
    sample = {_sha(prompt.render(t)) for t in fresh[:LATENCY_BATCH]}
    asked_again = [h for h, n in before.items() if after[h] > n and h not in sample]
    # At most the shard that was under way when the server failed (its texts were answered,
    # but the shard never finished, so none of it was stored).
    assert len(asked_again) <= SHARD_TEXTS, asked_again
    assert server.popen.poll() is None


def test_cancel_stops_every_shard_and_a_stalled_shard_is_redone(distributed: Stack,
                                                                tiny_models):
    s = distributed
    server, base, workers = _two_workers(s, TAILOR_SHARD_STALL_SECONDS=str(STALL_S))
    broker = redis.Redis.from_url(s.env["TAILOR_BROKER_URL"])
    try:
        with s.client() as client:
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
            coordinator, other = _hold_the_other(client, job_id, workers, base)
            job = wait_job(client, job_id, timeout=120)
    except BaseException:
        print(s.logs())
        raise
    finally:
        broker.close()
    _succeeded_once(s, job)  # only the stalled shard was redone, not the job
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


def _two_workers(s: Stack, **env: str) -> tuple[Any, str, dict[str, Any]]:
    """The latency teacher server, the API and two workers (API keys "a" and "b", so the
    server counts each one's requests), both beating: (server, its URL, workers by key)."""
    port = free_port()
    server = s.spawn("teacher", [sys.executable, "-m", "tests.fixtures.latency_teacher",
                                 "--port", str(port), "--latency-ms", "50"])
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/stats", timeout=2).status_code == 200, 60,
             what="teacher server")
    s.env.update(FAST, TAILOR_ANNOTATION_SHARD_TEXTS=str(SHARD_TEXTS),
                 TAILOR_MODEL_SOURCES=f"{support.TEST_MODEL_SOURCES},openai+{base}", **env)
    s.start_api()
    workers = {key: s.start_worker(env={"TAILOR_OPENAI_API_KEY": key}) for key in ("a", "b")}
    with s.client() as client:
        wait_for(lambda: client.get("/readyz").json().get("workers") == 2, 120,
                 what="two workers beating")
    return server, base, workers


def _hold_the_other(client: httpx.Client, job_id: str, workers: dict[str, Any], base: str
                    ) -> tuple[str, str]:
    """Once the job annotates, the teacher holds the requests of the worker that is not its
    coordinator from its HOLD_AFTER-th one on (unanswered: stuck mid-shard); returns the
    keys (coordinator, other) once the other is stuck."""
    wait_state(client, job_id, "annotating")
    job = client.get(f"/jobs/{job_id}").json()
    coordinator = next(k for k, w in workers.items()
                       if job["worker"] == f"tailor-{w.popen.pid}@{_host(job)}")
    other = "b" if coordinator == "a" else "a"
    hold = _stats(base)["by_key"].get(other, 0) + HOLD_AFTER
    httpx.post(f"{base}/hold", json={"key": other, "after": hold})
    wait_for(lambda: _stats(base)["by_key"].get(other, 0) > hold, 120,
             interval=0.05, what="the other worker to annotate and get stuck")
    return coordinator, other


def _succeeded_once(s: Stack, job: dict[str, Any]) -> None:
    """The job succeeded in its first attempt and registered exactly one version."""
    assert job["state"] == "succeeded", (job["error"], s.logs())
    assert job["attempts"] == 1
    joblog = JobLog(s.env["TAILOR_DATABASE_URL"])
    try:
        assert joblog.versions(job["id"]) == 1
    finally:
        joblog.close()


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

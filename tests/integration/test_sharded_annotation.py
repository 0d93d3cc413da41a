"""One job's teacher passes spread over two real workers (PostgreSQL + Redis), one of which
is SIGKILLed in the middle of a shard.

The teacher is tests/fixtures/latency_teacher.py, an OpenAI-compatible server that takes a
fixed time per request and counts every prompt it is asked; each worker calls it with its
own API key, so the server knows who asked what, and holds the second worker's requests
from its 21st on: that worker is stuck mid-shard when the test kills it.
"""

from __future__ import annotations

import hashlib
import re
import sys

import httpx
import pytest

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
REMOTE_DONE = re.compile(r"annotation shard \d+ \(\d+ texts\) of (job_\w+) done by")
COORDINATOR_DONE = re.compile(r"annotation shard \d+/\d+ \(\d+ texts\) done by the coordinator")


def test_two_workers_annotate_one_job_and_a_killed_shard_is_redone(distributed: Stack,
                                                                   tiny_models):
    s = distributed
    port = free_port()
    server = s.spawn("teacher", [sys.executable, "-m", "tests.fixtures.latency_teacher",
                                 "--port", str(port), "--latency-ms", "100"])
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/stats", timeout=2).status_code == 200, 60,
             what="teacher server")
    s.env.update(FAST, TAILOR_ANNOTATION_SHARD_TEXTS=str(SHARD_TEXTS),
                 TAILOR_MODEL_SOURCES=f"{support.TEST_MODEL_SOURCES},openai+{base}")
    s.start_api()
    workers = {key: s.start_worker(env={"TAILOR_OPENAI_API_KEY": key}) for key in ("a", "b")}
    texts = corpus(200)
    assert len(set(texts)) == len(texts)
    try:
        with s.client() as client:
            wait_for(lambda: client.get("/readyz").json().get("workers") == 2, 120,
                     what="two workers beating")
            ds = client.post("/datasets", json={"name": "news",
                                                "records": [{"text": t} for t in texts]})
            assert ds.status_code == 201, ds.text
            body = job_body("sharded", ds.json()["id"], f"openai+{base}/v1?model=fake",
                            tiny_models[1])
            # The tiny random student would be a labeler at chance, vetoing the teacher.
            body["teacher"]["extra_labelers"] = []
            job_id = submit(client, body)
            wait_state(client, job_id, "annotating")
            job = client.get(f"/jobs/{job_id}").json()
            coordinator = next(k for k, w in workers.items()
                               if job["worker"] == f"tailor-{w.popen.pid}@{_host(job)}")
            other = "b" if coordinator == "a" else "a"
            httpx.post(f"{base}/hold", json={"key": other, "after": HOLD_AFTER})
            # Stuck mid-shard: its 21st request (and any after) never gets an answer.
            wait_for(lambda: _stats(base)["by_key"].get(other, 0) > HOLD_AFTER, 120,
                     interval=0.05, what="the other worker to annotate and get stuck")
            workers[other].kill()
            job = wait_job(client, job_id, timeout=240)
    except BaseException:
        print(s.logs())
        raise
    assert job["state"] == "succeeded", (job["error"], s.logs())
    assert job["attempts"] == 1  # the coordinator never died: only the shard was redone
    joblog = JobLog(s.env["TAILOR_DATABASE_URL"])
    try:
        assert joblog.versions(job_id) == 1
    finally:
        joblog.close()
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
    assert server.popen.poll() is None


def _stats(base: str) -> dict:
    return httpx.get(f"{base}/stats", timeout=5).json()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _host(job: dict) -> str:
    return str(job["worker"]).split("@", 1)[1]

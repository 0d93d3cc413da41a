"""Worker faults on real processes (PostgreSQL, Redis, Celery workers): SIGKILL mid-run,
duplicate delivery, a poison job, cancel in every phase."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

from tests.integration.faults import (
    INCLUDE,
    distilling_job,
    faults,
    logs_contain,
    submit,
    wait_state,
)
from tests.integration.lifecycle import upload
from tests.integration.report import record
from tests.support import Stack, job_body, wait_for, wait_job
from worker.celery_app import QUEUE, TASK_NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]


def _fail_with_logs(stack: Stack):
    print(stack.logs())


def test_sigkill_mid_distillation_resumes_from_the_last_checkpoint(fault_stack, tiny_models):
    s, db = fault_stack
    slow = faults({"job": "resume", "state": "distilling", "action": "slow", "seconds": 0.4})
    first = s.start_worker(*INCLUDE, env=slow)
    try:
        with s.client() as client:
            job_id = distilling_job(client, "resume", tiny_models)
            time.sleep(1.0)  # a few training steps in
            first.kill()  # SIGKILL to the worker's whole process group
            killed = time.monotonic()
            s.start_worker(*INCLUDE, env=slow)
            job = wait_job(client, job_id, timeout=180)
            recovered = time.monotonic() - killed
    except BaseException:
        _fail_with_logs(s)
        raise
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    claims = db.events(job_id, "claimed")
    assert [c["data"]["attempt"] for c in claims] == [1, 2]
    assert claims[0]["data"]["owner"] != claims[1]["data"]["owner"]
    events = db.events(job_id)
    second = events[events.index(claims[1]):]
    first_run = events[:events.index(claims[1])]
    assert any(e["phase"] == "annotate" for e in first_run)
    # The second attempt picked up the annotation checkpoint; the teacher did not run again.
    assert any(e["state"] == "annotating" and e["phase"] == "resume" for e in second)
    assert not any(e["phase"] == "annotate" for e in second)
    requeues = [e for e in db.events(job_id, "requeued")
                if e["data"]["reason"] == "lease_expired"]
    assert len(requeues) == 1 and requeues[0]["state"] == "distilling"
    assert db.versions(job_id) == 1
    record(1, "worker SIGKILLed mid-distillation",
           "SIGKILL to the Celery worker's process group while the job is distilling; "
           "a second worker started",
           ["job succeeded on the second worker", "attempts = 2",
            "annotation not recomputed (resumed from checkpoint)", "exactly one version"],
           {"kill to success": f"{recovered:.1f} s", "lease": "5 s",
            "sweeper reason": requeues[0]["data"]["reason"]})


def test_the_same_task_delivered_twice_at_once_trains_once(fault_stack, tiny_models, redis_url):
    s, db = fault_stack
    pause = faults({"job": "dup", "state": "annotating", "action": "pause", "seconds": 4})
    with s.client() as client:
        ds, ev = upload(client)
        job_id = submit(client, job_body("dup", ds, *tiny_models, eval_dataset_id=ev))
        # A second copy of the very message, as a broker redelivery would make it.
        sender = Celery(broker=redis_url)
        sender.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
        sender.close()
        assert redis.Redis.from_url(redis_url).llen(QUEUE) == 2
        s.start_worker(*INCLUDE, env=pause)
        s.start_worker(*INCLUDE, env=pause)
        try:
            job = wait_job(client, job_id, timeout=180)
            wait_for(lambda: logs_contain(s, "worker", "lease held elsewhere"), 30,
                     what="the second delivery to report the live lease")
        except BaseException:
            _fail_with_logs(s)
            raise
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert len(db.events(job_id, "claimed")) == 1
    assert db.versions(job_id) == 1
    record(2, "same task delivered twice at once",
           "two copies of the job's message in Redis before two workers start",
           ["one claim, one training run (attempts = 1)",
            "the second delivery saw the live lease and ended", "exactly one version"],
           {"deliveries": 2, "claims": 1, "versions": 1})


def test_a_poison_job_fails_after_max_attempts_with_the_reason(fault_stack, tiny_models, redis_url):
    s, db = fault_stack
    poison = faults({"job": "poison", "state": "distilling", "action": "kill"})
    worker = s.start_worker(*INCLUDE, env=poison)
    try:
        with s.client() as client:
            ds, ev = upload(client)
            started = time.monotonic()
            job_id = submit(client, job_body("poison", ds, *tiny_models, eval_dataset_id=ev))
            job = wait_job(client, job_id, timeout=180)
            elapsed = time.monotonic() - started
            assert job["state"] == "failed", job
            events_then = len(db.events(job_id))
            time.sleep(6)  # more than a lease and several sweeps: nothing may happen again
            assert client.get(f"/jobs/{job_id}").json()["attempts"] == 3
            assert len(db.events(job_id)) == events_then
            # The worker survived its children's deaths and takes the next job.
            healthy = submit(client, job_body("healthy", ds, *tiny_models))
            assert wait_job(client, healthy, timeout=120)["state"] == "succeeded"
    except BaseException:
        _fail_with_logs(s)
        raise
    assert job["error"]["code"] == "worker_lost"
    assert "3 of 3 attempts" in job["error"]["message"]
    assert "distilling" in job["error"]["message"]
    assert job["attempts"] == 3 and len(db.events(job_id, "claimed")) == 3
    assert db.versions(job_id) == 0
    assert worker.popen.poll() is None
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen(QUEUE) == 0 and broker.hlen("unacked") == 0
    record(3, "poison job kills its worker process every time",
           "test fault module SIGKILLs the pool process at the first distilling step",
           ["failed with code worker_lost naming attempts and phase", "attempts = max = 3",
            "no further claims or messages afterwards", "the worker takes the next job"],
           {"submit to failed": f"{elapsed:.1f} s", "claims": 3,
            "message": job["error"]["message"]})


PHASES = ["annotating", "distilling", "evaluating", "registering"]


def test_cancel_during_each_phase_stops_in_bounded_time(fault_stack, tiny_models):
    s, db = fault_stack
    pause_s = 2.0
    rules = [{"job": f"cancel-{p}", "state": p, "action": "pause", "seconds": pause_s}
             for p in PHASES]
    s.start_worker(*INCLUDE, env=faults(*rules))
    latencies = {}
    try:
        with s.client() as client:
            ds, ev = upload(client)
            for phase in PHASES:
                job_id = submit(client, job_body(f"cancel-{phase}", ds, *tiny_models,
                                                 eval_dataset_id=ev))
                wait_state(client, job_id, phase)
                resp = client.post(f"/jobs/{job_id}/cancel")
                asked = time.monotonic()
                assert resp.status_code == 200 and resp.json()["cancel_requested"], resp.text
                job = wait_job(client, job_id, timeout=60)
                latencies[phase] = time.monotonic() - asked
                assert job["state"] == "cancelled", (phase, job)
                assert job["error"]["code"] == "cancelled" and job["model"] is None
                assert db.versions(job_id) == 0
                assert latencies[phase] < pause_s + 5, (phase, latencies[phase])
            after = submit(client, job_body("after-cancels", ds, *tiny_models))
            assert wait_job(client, after, timeout=120)["state"] == "succeeded"
    except BaseException:
        _fail_with_logs(s)
        raise
    assert db.versions(after) == 1
    record(4, "cancel during each phase",
           f"POST /jobs/{{id}}/cancel while the job is held {pause_s:.0f} s inside each phase",
           ["cancelled in every phase, no version registered",
            "registering: cancel checked under the job's row lock before the version",
            "the worker then ran the next job to success"],
           {f"{p} cancel latency": f"{v:.1f} s" for p, v in latencies.items()})

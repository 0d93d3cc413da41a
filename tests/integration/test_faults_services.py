"""Service outages on real processes: Redis stopped (messages lost), PostgreSQL stopped."""

from __future__ import annotations

import time

import pytest

from tests.integration.faults import (
    INCLUDE,
    distilling_job,
    faults,
    service,
    submit,
    timed,
    wait_state,
)
from tests.integration.lifecycle import upload
from tests.integration.report import record
from tests.support import job_body, wait_for, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]
TEXTS = ["earthquake killed thousands", "football team won"]


def _job_count(client) -> int:
    return len(client.get("/jobs", params={"limit": 500}).json()["jobs"])


def test_redis_outage_refuses_new_jobs_keeps_serving_and_recovers_queued_work(
        fault_stack, tiny_models):
    s, db = fault_stack
    hold = faults({"job": "running", "state": "distilling", "action": "pause", "seconds": 4})
    s.start_worker(*INCLUDE, env=hold)
    try:
        with s.client() as client:
            ds, ev = upload(client)
            base = submit(client, job_body("base", ds, *tiny_models))
            assert wait_job(client, base, timeout=120)["state"] == "succeeded"
            running = submit(client, job_body("running", ds, *tiny_models))
            wait_state(client, running, "distilling")
            waiting = submit(client, job_body("waiting", ds, *tiny_models))
            before = _job_count(client)
            service("redis_stop")  # no persistence: the waiting job's message is gone
            stopped = time.monotonic()
            refused, refuse_s = timed(lambda: client.post(
                "/jobs", json=job_body("refused", ds, *tiny_models)))
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "broker_unavailable" and "nothing was created" in error[
                "message"]
            assert refused.headers["retry-after"]
            assert _job_count(client) == before
            served = [client.post("/classify", json={"model": "base", "texts": TEXTS})
                      for _ in range(20)]
            assert all(r.status_code == 200 for r in served), served[-1].text
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["broker"] != "ok"
            service("redis_start")
            outage = time.monotonic() - stopped
            jobs = {j: wait_job(client, j, timeout=120) for j in (running, waiting)}
            recovered = time.monotonic() - stopped - outage
            after = submit(client, job_body("after", ds, *tiny_models))
            jobs[after] = wait_job(client, after, timeout=120)
    except BaseException:
        print(s.logs())
        raise
    for job_id, job in jobs.items():
        assert job["state"] == "succeeded", job
        assert len(db.events(job_id, "claimed")) == 1 and db.versions(job_id) == 1
    reasons = [e["data"]["reason"] for e in db.events(waiting, "requeued")]
    assert reasons == ["no_message"]
    record(5, "Redis stopped (queued messages lost)",
           "redis-server shut down without saving while one job runs and one waits; "
           "restarted empty",
           ["POST /jobs answered 503 broker_unavailable, no job row left",
            "/classify kept serving (20 of 20 answered 200)",
            "the running job finished; the waiting job was re-woken by the sweeper",
            "each job claimed once, one version each"],
           {"POST /jobs 503 after": f"{refuse_s:.1f} s", "outage": f"{outage:.1f} s",
            "Redis back to queued work done": f"{recovered:.1f} s"})


def test_postgres_outage_answers_503_survives_and_recovers(fault_stack, tiny_models):
    s, db = fault_stack
    slow = faults({"job": "through", "state": "distilling", "action": "slow", "seconds": 0.3})
    api = s.procs[0]
    worker = s.start_worker(*INCLUDE, env=slow)
    try:
        with s.client() as client:
            job_id = distilling_job(client, "through", tiny_models)
            service("pg_stop")
            stopped = time.monotonic()
            answers = {
                "GET /jobs/{id}": client.get(f"/jobs/{job_id}"),
                "GET /jobs": client.get("/jobs"),
                "POST /datasets": client.post("/datasets", json={
                    "name": "x", "records": [{"text": "flood"}]}),
                "GET /models": client.get("/models"),
                "POST /classify": client.post("/classify", json={"model": "through",
                                                                 "texts": TEXTS}),
            }
            for route, resp in answers.items():
                assert resp.status_code == 503, (route, resp.text)
                assert resp.json()["error"]["code"] == "database_unavailable", route
                assert resp.headers["retry-after"]
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
            time.sleep(max(0.0, 6 - (time.monotonic() - stopped)))  # outlive the lease
            service("pg_start")
            outage = time.monotonic() - stopped
            wait_for(lambda: client.get("/jobs").status_code == 200, 30, what="API recovery")
            recovered = time.monotonic() - stopped - outage
            job = wait_job(client, job_id, timeout=180)
            created = client.post("/datasets", json={"name": "x", "records": [{"text": "a"}]})
    except BaseException:
        print(s.logs())
        raise
    assert api.popen.poll() is None and worker.popen.poll() is None
    assert job["state"] == "succeeded", job
    assert created.status_code == 201
    assert db.versions(job_id) == 1
    record(6, "PostgreSQL stopped",
           "pg_ctl stop -m fast while a job is distilling; restarted after "
           f"{outage:.1f} s (longer than the 5 s lease)",
           ["GET/POST /jobs, /datasets, /models, /classify answered 503 "
            "database_unavailable with Retry-After", "/healthz 200, /readyz 503 naming the DB",
            "API and worker processes survived", "API answered again after the restart",
            f"the job succeeded with one version (attempts = {job['attempts']})"],
           {"outage": f"{outage:.1f} s", "first 200 after restart": f"{recovered:.1f} s",
            "job attempts": job["attempts"]})

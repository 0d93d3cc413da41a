"""A short soak on loopback: 1000 /classify requests while 3 jobs run on two workers."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.faults import FAST, JobLog, submit
from tests.integration.lifecycle import upload
from tests.integration.report import record
from tests.support import Stack, job_body, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]
REQUESTS, CLIENTS, JOBS = 1000, 8, 3
TEXTS = ["earthquake killed hundreds", "stock market rose today", "flood water rose",
         "concert opened in the city"]


def _classify_load(url: str) -> tuple[list[int], list[float], float]:
    statuses: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        started = time.perf_counter()
        try:
            status = local.client.post("/classify", json={
                "model": "base", "texts": TEXTS[: 1 + i % len(TEXTS)]}).status_code
        except httpx.HTTPError:
            status = 0  # a dropped connection counts against the soak like a 5xx
        with lock:
            statuses.append(status)
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(REQUESTS)))
    return statuses, latencies, time.monotonic() - started


def test_soak_classify_and_jobs_concurrently(distributed: Stack, tiny_models, pg_url):
    s = distributed
    s.env.update(FAST)
    s.start_api(worker=True)
    db = JobLog(pg_url)
    try:
        with s.client() as client:
            ds, ev = upload(client)
            base = submit(client, job_body("base", ds, *tiny_models))
            assert wait_job(client, base, timeout=120)["state"] == "succeeded"

            def submit_jobs() -> list[str]:
                ids = []
                for i in range(JOBS):
                    body = job_body(f"soak-{i}", ds, *tiny_models, eval_dataset_id=ev)
                    first = submit(client, body, **{"Idempotency-Key": f"soak-{i}"})
                    again = submit(client, body, **{"Idempotency-Key": f"soak-{i}"})  # a retry
                    assert first == again
                    ids.append(first)
                return ids

            with ThreadPoolExecutor(1) as side:
                submitted = side.submit(submit_jobs)
                statuses, latencies, elapsed = _classify_load(s.url)
                job_ids = submitted.result()
            jobs = [wait_job(client, j, timeout=240) for j in job_ids]
            listed = client.get("/jobs", params={"limit": 500}).json()["jobs"]
    except BaseException:
        print(s.logs())
        raise
    server_errors = [x for x in statuses if x >= 500 or x == 0]
    assert len(statuses) == REQUESTS and not server_errors, sorted(set(statuses))
    assert all(x in (200, 429) for x in statuses), sorted(set(statuses))
    assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in jobs), jobs
    assert len(listed) == JOBS + 1 and len({j["id"] for j in listed}) == JOBS + 1
    assert all(len(db.events(j, "claimed")) == 1 and db.versions(j) == 1 for j in job_ids)
    assert db.versions() == JOBS + 1
    db.close()
    quantiles = statistics.quantiles(latencies, n=100)
    record(10, "soak: 1000 /classify requests and 3 jobs at once",
           f"{CLIENTS} client threads on loopback while 3 jobs (each POSTed twice with one "
           "Idempotency-Key) run on a worker",
           ["zero 5xx or dropped connections", "3 jobs, each claimed once and registered once",
            "no duplicate job rows from the retried POSTs"],
           {"requests": REQUESTS, "200": statuses.count(200), "429": statuses.count(429),
            "throughput": f"{REQUESTS / elapsed:.0f} req/s",
            "latency p50/p95/p99": f"{quantiles[49] * 1000:.0f} / {quantiles[94] * 1000:.0f} / "
                                   f"{quantiles[98] * 1000:.0f} ms",
            "bug it found (fixed)": "concurrent requests shared one fast tokenizer's padding "
                                    "state: 500s and dropped connections"})

"""Idempotency-Key under concurrency on a real API process and PostgreSQL: one key, one row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.faults import JobLog
from tests.integration.lifecycle import upload
from tests.support import Stack, job_body

pytestmark = pytest.mark.integration
RACERS = 8


def _race(url: str, path: str, body: dict, key: str) -> list[httpx.Response]:
    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post(path, json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(post, range(RACERS)))


def test_concurrent_requests_with_one_key_make_one_row(distributed: Stack, tiny_models, pg_url):
    distributed.start_api()
    db = JobLog(pg_url)
    with distributed.client() as client:
        ds, _ = upload(client)
        records = {"name": "raced", "records": [{"text": "flood"}, {"text": "calm day"}]}
        datasets = _race(distributed.url, "/datasets", records, "ds-key")
        assert {r.status_code for r in datasets} == {201}, [r.text for r in datasets]
        assert len({r.json()["id"] for r in datasets}) == 1
        body = job_body("raced", ds, *tiny_models)
        jobs = _race(distributed.url, "/jobs", body, "job-key")
        assert {r.status_code for r in jobs} == {202}, [r.text for r in jobs]
        assert len({r.json()["id"] for r in jobs}) == 1
        other = client.post("/jobs", json={**body, "name": "other"},
                            headers={"Idempotency-Key": "job-key"})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_mismatch"
        other_ds = client.post("/datasets", json={**records, "name": "changed"},
                               headers={"Idempotency-Key": "ds-key"})
        assert other_ds.status_code == 422
    assert db.scalar("SELECT count(*) FROM jobs") == 1
    assert db.scalar("SELECT count(*) FROM datasets WHERE name = 'raced'") == 1
    assert db.scalar("SELECT count(*) FROM dataset_records WHERE dataset_id = :d",
                     d=datasets[0].json()["id"]) == 2
    db.close()

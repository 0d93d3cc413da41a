"""Shared pieces of the fault-injection tests: short leases, worker faults, service control,
and reading the job log straight from the database."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.support import ROOT, Stack, job_body, wait_for

# Short enough that recovery happens within seconds, long enough that a busy 2-core machine
# still renews leases in time (the heartbeat renews every third of the lease).
FAST = {"TAILOR_JOB_LEASE_SECONDS": "5", "TAILOR_JOB_SWEEP_SECONDS": "1",
        "TAILOR_JOB_REQUEUE_SECONDS": "5"}
INCLUDE = ("--include", "tests.fixtures.faults")


def faults(*rules: dict[str, Any]) -> dict[str, str]:
    """Worker env that arms tests/fixtures/faults.py with `rules`."""
    return {"TAILOR_TEST_FAULTS": json.dumps(list(rules))}


def service(command: str) -> None:
    """Run a scripts/services.sh function (pg_stop, pg_start, redis_stop, redis_start)."""
    subprocess.run(["bash", "-c", f"source scripts/services.sh && {command}"], cwd=ROOT,
                   env=os.environ.copy(), check=True, timeout=60)


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    resp = client.post("/jobs", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def wait_state(client: httpx.Client, job_id: str, state: str, timeout: float = 120) -> float:
    """Wait until the job is in `state`; return the monotonic time it was seen."""
    def seen() -> bool:
        current = client.get(f"/jobs/{job_id}").json()["state"]
        assert current not in {"succeeded", "failed", "cancelled"} or current == state, current
        return current == state

    wait_for(seen, timeout, interval=0.05, what=f"job {job_id} in {state}")
    return time.monotonic()


class JobLog:
    """Read-only view of the database behind a stack: job events, versions, job rows."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)

    def events(self, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT kind, state, phase, data FROM job_events WHERE job_id = :j"
        with self.engine.connect() as conn:
            rows = conn.execute(text(sql + (" AND kind = :k" if kind else "") + " ORDER BY id"),
                                {"j": job_id, "k": kind}).mappings().all()
        out = [dict(r) for r in rows]
        for event in out:  # SQLite hands JSON back as text
            if isinstance(event["data"], str):
                event["data"] = json.loads(event["data"])
        return out

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def versions(self, job_id: str | None = None) -> int:
        if job_id:
            return int(self.scalar("SELECT count(*) FROM model_versions WHERE job_id = :j",
                                   j=job_id))
        return int(self.scalar("SELECT count(*) FROM model_versions"))

    def close(self) -> None:
        self.engine.dispose()


def logs_contain(stack: Stack, name: str, needle: str) -> bool:
    return any(needle in p.log.read_text(errors="replace") for p in stack.procs if p.name == name)


def distilling_job(client: httpx.Client, name: str, tiny_models: tuple[str, str]) -> str:
    """Upload the tiny corpus, submit job `name` and return its id once it is distilling."""
    from tests.integration.lifecycle import upload

    ds, ev = upload(client)
    job_id = submit(client, job_body(name, ds, *tiny_models, eval_dataset_id=ev))
    wait_state(client, job_id, "distilling")
    return job_id


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started

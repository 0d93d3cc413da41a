"""A dead worker is noticed (/readyz) and, in embedded mode, replaced (app.serve's supervisor).

Real processes: `python -m app.serve` with its supervised worker on SQLite + the filesystem
broker; and an API plus Celery workers on PostgreSQL + Redis.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.faults import FAST, JobLog, submit, wait_state
from tests.integration.lifecycle import upload
from tests.integration.report import record
from tests.support import Proc, Stack, free_port, job_body, wait_for, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BEAT_S, FRESH_S = 0.5, 3.0
LIVENESS = {"TAILOR_WORKER_HEARTBEAT_SECONDS": str(BEAT_S),
            "TAILOR_WORKER_FRESH_SECONDS": str(FRESH_S)}
STARTED = re.compile(r"worker started \(pid (\d+)\)")


def _ready(client: httpx.Client) -> tuple[int, dict]:
    resp = client.get("/readyz")
    return resp.status_code, resp.json()


def _started_pids(proc: Proc) -> list[int]:
    return [int(pid) for pid in STARTED.findall(proc.log.read_text(errors="replace"))]


def _beating_pids(db: str) -> set[int]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return {int(r) for r in conn.execute(text("SELECT pid FROM worker_heartbeats")
                                                 ).scalars()}
    finally:
        engine.dispose()


def _watch_recovery(client: httpx.Client, serve: Proc, killed: float,
                    timeline: dict[str, float], timeout: float = 120) -> dict:
    """Poll /readyz and the serve log until readiness dropped, a new worker started and
    readiness came back; note when each was first seen; return the 503 body."""
    dropped: dict | None = None
    deadline = killed + timeout
    while "ready again" not in timeline:
        assert time.monotonic() < deadline, (timeline, serve.tail())
        code, body = _ready(client)
        now = time.monotonic() - killed
        if code == 503 and dropped is None:
            dropped, timeline["/readyz 503"] = body, now
        if "new worker started" not in timeline and len(_started_pids(serve)) == 2:
            timeline["new worker started"] = now
        if code == 200 and dropped is not None:
            timeline["ready again"] = now
        time.sleep(0.05)
    assert dropped is not None
    return dropped


@pytest.mark.reliability
def test_embedded_worker_sigkilled_mid_job_is_replaced_and_finishes_it(embedded_stack: Stack,
                                                                       tiny_models):
    s = embedded_stack
    # Backoff 2 s: longer than nothing, so the test also sees the gap the restart leaves.
    s.env.update(FAST, **LIVENESS, TAILOR_WORKER_RESTART_BACKOFF_SECONDS="2")
    s.port = free_port()
    serve = s.spawn("serve", [sys.executable, "-m", "app.serve", "--port", str(s.port)])
    db_url = f"sqlite:///{s.home / 'tailor.db'}"
    timeline: dict[str, float] = {}
    try:
        with s.client() as client:
            wait_for(lambda: _ready(client)[0] == 200, 90, what="embedded /readyz 200")
            first = _started_pids(serve)
            assert len(first) == 1 and _beating_pids(db_url) == set(first)
            ds, ev = upload(client)
            # Enough epochs that the job is still distilling when its worker is killed.
            job_id = submit(client, job_body("revive", ds, *tiny_models, eval_dataset_id=ev,
                                             epochs=30, batch_size=4))
            wait_state(client, job_id, "distilling")
            os.kill(first[0], signal.SIGKILL)  # the worker's main process; Celery's pool
            killed = time.monotonic()           # children follow it (parent-death signal)

            dropped = _watch_recovery(client, serve, killed, timeline)
            job = wait_job(client, job_id, timeout=240)
            timeline["job succeeded"] = time.monotonic() - killed
    except BaseException:
        print(s.logs())
        raise
    second = _started_pids(serve)[1]
    # The dead worker's row stays (stale, for whoever investigates) beside the new one's.
    assert second != first[0] and _beating_pids(db_url) == {first[0], second}
    assert dropped["checks"]["worker"].startswith(
        f"error: no worker heartbeat in the last {FRESH_S:g} s"), dropped
    assert {k: v for k, v in dropped["checks"].items() if k != "worker"} == {
        "database": "ok", "broker": "ok", "artifacts": "ok"}
    log = serve.log.read_text(errors="replace")
    assert f"worker pid {first[0]} killed by SIGKILL (signal 9); restarting it in 2.0 s" in log
    assert serve.popen.poll() is None  # the API never went down
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    joblog = JobLog(db_url)
    try:
        claims = joblog.events(job_id, "claimed")
        reasons = [e["data"]["reason"] for e in joblog.events(job_id, "requeued")]
        assert joblog.versions(job_id) == 1
    finally:
        joblog.close()
    assert len(claims) == 2 and reasons == ["lease_expired"]
    assert timeline["/readyz 503"] <= FRESH_S + 3
    record(16, "embedded worker SIGKILLed (app.serve)",
           "SIGKILL to the Celery worker's main process started by `python -m app.serve` "
           "(SQLite + filesystem broker) while a job is distilling",
           ["/readyz answered 503 naming the `worker` check (other checks ok)",
            "the supervisor logged the signal and started a new worker after its backoff",
            "/readyz 200 again once the new worker's heartbeat arrived",
            "the job resumed on the new worker and succeeded (attempts = 2, one version)",
            "the API process stayed up throughout"],
           {f"death to {k}": f"{v:.1f} s" for k, v in timeline.items()}
           | {"heartbeat / window": f"{BEAT_S:g} s / {FRESH_S:g} s",
              "restart backoff": "2 s", "lease": "5 s"})


def test_distributed_readiness_follows_real_workers(distributed: Stack):
    s = distributed
    s.env.update(LIVENESS)
    s.start_api()
    with s.client() as client:
        code, body = _ready(client)
        assert code == 503 and body["checks"]["worker"].startswith("error: no worker heartbeat")
        assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
        polite, doomed = s.start_worker(), s.start_worker()
        try:
            wait_for(lambda: _ready(client)[1]["workers"] == 2, 90, what="two workers beating")
        except TimeoutError:
            print(s.logs())
            raise
        assert _ready(client)[0] == 200
        polite.stop()  # SIGTERM: a clean shutdown removes its row at once
        assert _ready(client) == (200, {"status": "ready", "workers": 1, "checks": {
            "database": "ok", "broker": "ok", "artifacts": "ok", "worker": "ok"}})
        doomed.kill()  # SIGKILL: no goodbye; its last beat ages out of the window
        killed = time.monotonic()
        wait_for(lambda: _ready(client)[0] == 503, FRESH_S + 10, interval=0.05,
                 what="/readyz 503 after the window")
        noticed = time.monotonic() - killed
        assert _ready(client)[1]["workers"] == 0
    # Not before the window (less one beat and some scheduling slack) had passed.
    assert FRESH_S - BEAT_S - 1.0 <= noticed <= FRESH_S + 3, noticed

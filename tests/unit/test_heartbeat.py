"""Worker heartbeats on a migrated SQLite database, and the /readyz worker check."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.models import WorkerHeartbeat
from app.models.base import utcnow
from app.ops import workers
from worker import heartbeat


def _beat(worker_id: str, age_s: float) -> None:
    seen = utcnow() - timedelta(seconds=age_s)
    with session_scope() as db:
        workers.beat(db, worker_id=worker_id, hostname="h", pid=1, queues=["distill"],
                     started_at=seen, now=seen)


def _liveness(fresh_s: float = 20) -> workers.Liveness:
    with session_scope() as db:
        return workers.liveness(db, fresh_s=fresh_s)


def test_liveness_counts_only_fresh_beats(embedded):
    assert _liveness() == workers.Liveness(live=0, last_seen_s=None)
    _beat("celery@a/1", age_s=45)
    stale = _liveness()
    assert stale.live == 0 and stale.last_seen_s is not None and 44 < stale.last_seen_s < 50
    _beat("celery@b/2", age_s=1)
    _beat("celery@c/3", age_s=5)
    fresh = _liveness()
    assert fresh.live == 2 and fresh.last_seen_s is not None and fresh.last_seen_s < 3
    assert _liveness(fresh_s=3).live == 1
    _beat("celery@a/1", age_s=0)  # the same worker beats again: one row, refreshed
    assert _liveness().live == 3
    with session_scope() as db:
        assert db.query(WorkerHeartbeat).count() == 3
        workers.forget(db, "celery@a/1")
    assert _liveness().live == 2


def test_rows_of_long_dead_workers_are_dropped_by_live_beats(embedded):
    _beat("celery@gone/9", age_s=2 * 86400)
    _beat("celery@live/1", age_s=0)
    with session_scope() as db:
        assert [r.id for r in db.query(WorkerHeartbeat)] == ["celery@live/1"]


def test_the_thread_beats_until_stopped_then_removes_its_row(embedded, monkeypatch):
    monkeypatch.setenv("TAILOR_WORKER_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("TAILOR_WORKER_FRESH_SECONDS", "1")
    get_settings.cache_clear()
    consumer = SimpleNamespace(hostname="celery@box",
                               app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(
                                   consume_from={"distill": object()}))))
    heartbeat._start(sender=consumer)
    try:
        beat = heartbeat._running[0]
        assert beat.worker_id.startswith("celery@box/")
        deadline = time.monotonic() + 10
        while _liveness(fresh_s=1).live == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with session_scope() as db:
            row = db.get(WorkerHeartbeat, beat.worker_id)
            assert row is not None and row.queues == ["distill"]
            first = row.last_seen
        time.sleep(0.2)
        with session_scope() as db:
            row = db.get(WorkerHeartbeat, beat.worker_id)
            assert row is not None and row.last_seen > first  # it keeps beating
    finally:
        heartbeat._stop()
    assert not beat.is_alive()
    assert _liveness() == workers.Liveness(live=0, last_seen_s=None)


def test_readyz_names_the_worker_check(client):
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["worker"].startswith("error: no worker heartbeat in the last 20 s")
    assert "no worker has ever beaten" in body["checks"]["worker"] and body["workers"] == 0
    _beat("celery@old/1", age_s=90)
    stale = client.get("/readyz")
    assert stale.status_code == 503 and "last beat was 90 s ago" in stale.json()["checks"][
        "worker"]
    _beat("celery@new/2", age_s=2)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "workers": 1, "checks": {
        "database": "ok", "broker": "ok", "artifacts": "ok", "worker": "ok"}}


@pytest.mark.parametrize(("beat_s", "fresh_s"), [(5, 9), (1, 1), (10, 0.5)])
def test_a_window_shorter_than_two_beats_is_refused(beat_s, fresh_s):
    with pytest.raises(ValueError, match="TAILOR_WORKER_FRESH_SECONDS"):
        Settings(worker_heartbeat_seconds=beat_s, worker_fresh_seconds=fresh_s)

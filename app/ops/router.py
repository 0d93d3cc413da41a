"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.core.broker import Broker, BrokerDep
from app.core.config import get_settings
from app.core.db import ping, session_scope
from app.core.deps import AdminScope
from app.models import Job
from app.ops import artifacts, workers
from app.ops.metrics import JOBS, REGISTRY

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _worker_check(fresh_s: float) -> tuple[str, int]:
    """The `worker` check and the number of workers with a heartbeat in the window."""
    with session_scope() as db:
        seen = workers.liveness(db, fresh_s=fresh_s)
    if seen.live:
        return "ok", seen.live
    last = ("no worker has ever beaten" if seen.last_seen_s is None
            else f"the last beat was {seen.last_seen_s:.0f} s ago")
    return f"error: no worker heartbeat in the last {fresh_s:g} s ({last})", 0


def _checks(broker: Broker) -> tuple[dict[str, Any], int | None]:
    checks: dict[str, Any] = {}
    live: int | None = None
    try:
        ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok" if broker.reachable() else "error: unreachable"
    store = get_settings().artifacts
    checks["artifacts"] = artifacts.check_writable(store)
    if checks["artifacts"] == "ok" and checks["database"] == "ok":
        try:
            with session_scope() as db:
                checks["artifacts"] = artifacts.check_registered(db, store).verdict()
        except Exception as exc:
            checks["artifacts"] = f"error: {type(exc).__name__}"
    if checks["database"] != "ok":  # the heartbeats live in the database
        checks["worker"] = "error: unknown while the database is unreachable"
    else:
        try:
            checks["worker"], live = _worker_check(get_settings().worker_fresh_seconds)
        except Exception as exc:
            checks["worker"] = f"error: {type(exc).__name__}"
    return checks, live


@router.get("/readyz", summary="Database, broker, artifact store reachable; a worker alive")
async def readyz(broker: BrokerDep) -> JSONResponse:
    """200 when every check is "ok", else 503; `workers` counts fresh worker heartbeats.

    `artifacts` is "ok" when the store is writable and holds the files of the sampled
    registered versions (aliased and newest: app.ops.artifacts).

    The checks block on I/O (database, broker, disk), so they run in the thread pool.
    """
    checks, live = await run_in_threadpool(_checks, broker)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks,
                         "workers": live}, status_code=200 if ready else 503)


def _job_counts() -> None:
    with session_scope() as db:
        rows = db.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    JOBS.clear()
    for state, count in rows:
        JOBS.labels(state).set(count)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, _: AdminScope) -> Response:
    with contextlib.suppress(Exception):  # metrics must answer while the database is down
        await run_in_threadpool(_job_counts)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

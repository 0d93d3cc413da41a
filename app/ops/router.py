"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.core.config import get_settings
from app.core.db import ping, session_scope
from app.core.deps import AdminScope
from app.models import Job
from app.ops.metrics import JOBS, REGISTRY
from worker.celery_app import broker_reachable

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _checks() -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok" if broker_reachable() else "error: unreachable"
    store = get_settings().artifacts
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = store / ".ready-probe"
        probe.write_text("ok")
        probe.unlink()
        checks["artifacts"] = "ok"
    except OSError as exc:
        checks["artifacts"] = f"error: {exc.strerror}"
    return checks


@router.get("/readyz", summary="Database, broker and artifact store are reachable")
async def readyz() -> JSONResponse:
    checks = await run_in_threadpool(_checks)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


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

"""HTTP routes for jobs: submit, list, get, Server-Sent Events, cancel, delete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.broker import BrokerDep
from app.core.db import after_commit, session_scope
from app.core.deps import SessionDep, TrainScope
from app.core.params import DEFAULT_LIST_LIMIT, LimitQuery, OffsetQuery
from app.core.security import Principal
from app.core.strict_json import StrictJsonRoute
from app.jobs import files, service
from app.jobs.schemas import DryRunOut, JobCreate, JobList, JobOut
from app.models import FINAL_STATES, JobState

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=StrictJsonRoute)
SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15


@router.post("", status_code=202, response_model=JobOut,
             summary="Submit a distillation job (202; honours Idempotency-Key)",
             responses={200: {"model": DryRunOut,
                              "description": "dry_run=true: valid; the estimate. Nothing "
                                             "was created."}})
def submit_job(payload: JobCreate, response: Response, db: SessionDep, principal: TrainScope,
               broker: BrokerDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
               dry_run: Annotated[bool, Query(
                   description="Validate as a real submission does and answer 200 with an "
                               "estimate (texts, teacher calls, seconds per phase); create "
                               "nothing. An Idempotency-Key is recorded nowhere; one "
                               "already used with another body is refused as a real "
                               "submission would refuse it.")] = False) -> Any:
    if dry_run:
        body = DryRunOut.model_validate(service.dry_run(db=db, payload=payload,
                                                        principal=principal,
                                                        idempotency_key=idempotency_key))
        return JSONResponse(body.model_dump(mode="json"), status_code=200)
    job, _created = service.submit_job(db=db, payload=payload, principal=principal,
                                       idempotency_key=idempotency_key, broker=broker)
    response.headers["Location"] = f"/jobs/{job.id}"
    return service.job_to_dict(job)


@router.get("", response_model=JobList)
def list_jobs(db: SessionDep, principal: TrainScope,
              state: Annotated[JobState | None, Query()] = None,
              name: Annotated[str | None, Query(max_length=64)] = None,
              limit: LimitQuery = DEFAULT_LIST_LIMIT,
              offset: OffsetQuery = 0) -> Any:
    jobs = service.list_jobs(db=db, viewer=principal, state=state.value if state else None,
                             name=name, limit=limit, offset=offset)
    return {"jobs": [service.job_to_dict(j) for j in jobs],
            "next_offset": offset + limit if len(jobs) == limit else None}


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, db: SessionDep, principal: TrainScope) -> Any:
    return service.job_to_dict(service.get_job(db=db, job_id=job_id, viewer=principal))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel (409 if already final)")
def cancel_job(job_id: str, db: SessionDep, principal: TrainScope) -> Any:
    return service.job_to_dict(service.cancel_job(db=db, job_id=job_id, viewer=principal))


@router.delete("/{job_id}", status_code=204, response_class=Response,
               summary="Delete a final job, its events and work files (never a registered "
                       "version's artifacts)",
               responses={404: {"description": "no such job (or another key's)"},
                          409: {"description": "`job_not_final`: cancel it first"}})
def delete_job(job_id: str, db: SessionDep, principal: TrainScope) -> Response:
    kept = service.delete_job(db=db, job_id=job_id, viewer=principal)
    after_commit(db, files.remove_work_files, job_id, keep=kept)
    return Response(status_code=204)


@router.get("/{job_id}/events", summary="Server-Sent Events: state changes and progress",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, db: SessionDep, principal: TrainScope,
                     last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    service.get_job(db=db, job_id=job_id, viewer=principal)  # 404 before the stream starts
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(_stream(job_id, start, principal), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _poll(job_id: str, after: int, viewer: Principal) -> tuple[list[dict[str, Any]], str]:
    with session_scope() as db:
        events = [e.to_dict() for e in service.events_after(db=db, job_id=job_id,
                                                            after_id=after)]
        state = service.get_job(db=db, job_id=job_id, viewer=viewer).state
    return events, state


async def _stream(job_id: str, after: int, viewer: Principal) -> AsyncIterator[str]:
    idle = 0.0
    while True:
        events, state = await run_in_threadpool(_poll, job_id, after, viewer)
        for event in events:
            after = event["id"]
            yield f"id: {after}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"
        if state in FINAL_STATES and not events:
            yield f"event: end\ndata: {json.dumps({'state': state})}\n\n"
            return
        idle = 0.0 if events else idle + SSE_POLL_SECONDS
        if idle >= SSE_KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_SECONDS)

"""HTTP routes for evaluations: score a version on a labeled dataset, list, get."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from app.core.deps import ClassifyScope, SessionDep
from app.core.params import DEFAULT_LIST_LIMIT, LimitQuery, OffsetQuery, VersionQuery
from app.core.strict_json import StrictJsonRoute
from app.evaluations import service
from app.evaluations.schemas import EvaluationCreate, EvaluationList, EvaluationOut
from app.jobs.schemas import NAME_PATTERN

router = APIRouter(prefix="/evaluations", tags=["evaluations"], route_class=StrictJsonRoute)


@router.post("", status_code=201, response_model=EvaluationOut,
             summary="Score a model version on a labeled dataset and store the result",
             description="Runs synchronously on the serving pool, batched like /classify, "
                         "over at most TAILOR_MAX_EVALUATION_ROWS labeled rows; honours "
                         "Idempotency-Key.",
             responses={429: {"description": "The serving queue stayed full; see "
                                             "Retry-After"}})
async def create_evaluation(body: EvaluationCreate, request: Request, principal: ClassifyScope,
                            idempotency_key: Annotated[str | None,
                                                       Header(max_length=200)] = None) -> Any:
    state = request.app.state
    return await service.evaluate(state.pool, state.batcher, state.refs, body, principal,
                                  idempotency_key)


@router.get("", response_model=EvaluationList, summary="List evaluations, newest first")
def list_evaluations(db: SessionDep, principal: ClassifyScope,
                     model: Annotated[str | None, Query(
                         max_length=64, pattern=NAME_PATTERN,
                         description="A model name (not `name:3` or `name@alias`: an empty "
                                     "list would hide the mistake).")] = None,
                     version: VersionQuery = None,
                     dataset_id: Annotated[str | None, Query(max_length=40)] = None,
                     limit: LimitQuery = DEFAULT_LIST_LIMIT, offset: OffsetQuery = 0) -> Any:
    rows = service.list_evaluations(db=db, viewer=principal, model=model, version=version,
                                    dataset_id=dataset_id, limit=limit, offset=offset)
    return {"evaluations": [service.evaluation_to_dict(e) for e in rows],
            "next_offset": offset + limit if len(rows) == limit else None}


@router.get("/{evaluation_id}", response_model=EvaluationOut)
def get_evaluation(evaluation_id: str, db: SessionDep, principal: ClassifyScope) -> Any:
    return service.evaluation_to_dict(
        service.get_evaluation(db=db, evaluation_id=evaluation_id, viewer=principal))

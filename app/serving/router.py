"""HTTP route for /classify."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.core.deps import ClassifyScope
from app.serving import service
from app.serving.schemas import ClassifyIn, ClassifyOut

router = APIRouter(tags=["serving"])


@router.post("/classify", response_model=ClassifyOut,
             summary="Classify texts with a registered student (name, name:v or name@alias)")
async def classify(body: ClassifyIn, request: Request, _: ClassifyScope) -> Any:
    return await run_in_threadpool(service.classify, request.app.state.pool, body)

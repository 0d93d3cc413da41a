"""HTTP routes for /classify and the Hugging Face text-classification contract."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.core.deps import ClassifyScope
from app.core.strict_json import StrictJsonRoute
from app.serving import service
from app.serving.schemas import ClassifyIn, ClassifyOut, PredictIn, PredictLabel

router = APIRouter(tags=["serving"], route_class=StrictJsonRoute)


async def queue_open(request: Request) -> None:
    """429 at once while the queue is full: before authentication, body parsing or a thread."""
    request.app.state.batcher.check_open()


@router.post("/classify", response_model=ClassifyOut, response_model_exclude_unset=True,
             summary="Classify texts with a registered student (name, name:v or name@alias)",
             responses={429: {"description": "The serving queue is full; see Retry-After"}})
async def classify(_open: Annotated[None, Depends(queue_open)], body: ClassifyIn,
                   request: Request, _: ClassifyScope) -> Any:
    state = request.app.state
    return await service.classify(state.pool, state.batcher, state.refs, body,
                                  state.explainer)


@router.post("/models/{ref}/predict", response_model=list[list[PredictLabel]],
             summary="Classify in the Hugging Face text-classification inference contract",
             description="`{\"inputs\": str | [str], \"parameters\": {\"top_k\"?, "
             "\"function_to_apply\"?}}` -> one list of `{\"label\", \"score\"}` per input, "
             "highest first (a list of one list for a single string, as the HF Inference API "
             "answers), so `huggingface_hub.InferenceClient(model=\"<tailor>/models/<ref>/"
             "predict\").text_classification(text)` works unchanged. `ref` is `name`, `name:3` "
             "or `name@alias`; same checks, limits, batching and scores as /classify.",
             responses={429: {"description": "The serving queue is full; see Retry-After"}})
async def predict(_open: Annotated[None, Depends(queue_open)], ref: str, body: PredictIn,
                  request: Request, _: ClassifyScope) -> Any:
    state = request.app.state
    return await service.predict(state.pool, state.batcher, state.refs, ref, body)

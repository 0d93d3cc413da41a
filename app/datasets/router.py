"""HTTP routes for datasets: upload (JSON, multipart JSONL/CSV, raw JSONL/CSV), get, list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.datastructures import UploadFile

from app.core.deps import SessionDep, TrainScope
from app.core.errors import BadRequest, Invalid
from app.core.limits import MAX_LIST_OFFSET
from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetList, DatasetOut

router = APIRouter(prefix="/datasets", tags=["datasets"])

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DatasetCreate"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": "JSONL or CSV (text, optional label)"},
                               "name": {"type": "string"}}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}
RAW_TYPES = {"application/x-ndjson": "upload.jsonl", "application/jsonl": "upload.jsonl",
             "text/csv": "upload.csv"}


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=_UPLOAD_DOC,
             summary="Upload a dataset (JSON records, or a JSONL/CSV file)")
async def create_dataset(request: Request, db: SessionDep, principal: TrainScope,
                         name: Annotated[str | None, Query(max_length=200)] = None,
                         idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                         ) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        ds_name, rows = service.parse_json(await request.body())
    elif content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid("file", "multipart upload needs a 'file' part")
        filename = upload.filename or "upload.jsonl"
        rows = service.parse_file(await upload.read(), filename)
        form_name = form.get("name")
        ds_name = (form_name if isinstance(form_name, str) and form_name else
                   name or Path(filename).stem)
    elif content_type in RAW_TYPES:
        rows = service.parse_file(await request.body(), RAW_TYPES[content_type])
        ds_name = name or "upload"
    else:
        raise BadRequest(f"unsupported Content-Type {content_type or '(none)'!r}; use "
                         "application/json, multipart/form-data, application/x-ndjson or text/csv",
                         code="unsupported_media_type")
    dataset = service.create_dataset(db=db, name=ds_name, rows=rows, owner=principal.key_id,
                                     idempotency_key=idempotency_key)
    return dataset.summary()


@router.get("", response_model=DatasetList)
def list_datasets(db: SessionDep, principal: TrainScope,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0) -> Any:
    datasets = service.list_datasets(db=db, viewer=principal, limit=limit, offset=offset)
    return {"datasets": [d.summary() for d in datasets]}


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, db: SessionDep, principal: TrainScope) -> Any:
    return service.get_dataset(db=db, dataset_id=dataset_id, viewer=principal).summary()


# Referenced by _UPLOAD_DOC so that the schema is emitted into components.
__all__ = ["router", "DatasetCreate"]

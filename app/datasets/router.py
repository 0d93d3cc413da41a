"""HTTP routes for datasets: upload (JSON, multipart JSONL/CSV, raw JSONL/CSV), get, list,
delete.

Uploads are parsed and stored in worker threads, never on the event loop: a large upload
costs its own request time, not everyone's.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from app.core.deps import SessionDep, TrainScope
from app.core.errors import BadRequest, Invalid, UnsupportedMediaType
from app.core.params import DEFAULT_LIST_LIMIT, LimitQuery, OffsetQuery
from app.core.streams import RequestBodyFile, sliced
from app.core.strict_json import PARSED_BODY_KEY, is_json_type, media_type, parse_body
from app.datasets import parsing, service
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
                               "name": {"type": "string"},
                               "text_column": {"type": "string"},
                               "label_column": {"type": "string"}}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}
# Media types of a file sent as the whole body, and the reader for each.
FILE_TYPES = {"application/x-ndjson": "jsonl", "application/jsonl": "jsonl", "text/csv": "csv"}
ACCEPTED = ["application/json", "multipart/form-data", *FILE_TYPES]
READERS = {"jsonl": parsing.read_jsonl, "csv": parsing.read_csv}
ColumnQuery = Annotated[str | None, Query(description="Column (CSV) or field (JSONL) holding "
                                                      "the text / label, for raw file bodies.")]


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=_UPLOAD_DOC,
             summary="Upload a dataset (JSON records, or a JSONL/CSV file)")
async def create_dataset(request: Request, db: SessionDep, principal: TrainScope,
                         name: Annotated[str | None, Query()] = None,
                         text_column: ColumnQuery = None, label_column: ColumnQuery = None,
                         idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                         ) -> Any:
    media = media_type(request.headers.get("content-type"))
    try:
        if is_json_type(media):
            payload = await _json_payload(request)
            ds_name, parsed = await run_in_threadpool(parsing.rows_from_json, payload)
        elif media == "multipart/form-data":
            ds_name, parsed = await _from_form(request, name, text_column, label_column)
        elif media in FILE_TYPES:
            ds_name = parsing.validate_name(name) if name is not None else "upload"
            columns = parsing.columns_from(text_column, label_column)
            body = RequestBodyFile(request.stream())
            parsed = await run_in_threadpool(READERS[FILE_TYPES[media]], body, columns)
        else:
            raise UnsupportedMediaType(
                f"Content-Type {media or '(none)'!r} is not accepted; use one of "
                f"{', '.join(ACCEPTED)}", details={"accepted": ACCEPTED, "received": media})
    except ClientDisconnect as exc:
        raise BadRequest("the client disconnected during the upload",
                         code="client_disconnected") from exc
    dataset = await run_in_threadpool(partial(
        service.create_dataset, db=db, name=ds_name, rows=parsed.rows,
        owner=principal.key_id, idempotency_key=idempotency_key))
    return {**dataset.summary(), "warnings": parsed.warnings}


async def _json_payload(request: Request) -> Any:
    """The body as parsed by StrictJsonMiddleware (parsed here if it did not run)."""
    parsed = getattr(request.state, PARSED_BODY_KEY, _MISSING)
    if parsed is _MISSING:
        parsed = await parse_body(await request.body())
    return parsed


_MISSING = object()


FORM_FIELDS = ("name", "text_column", "label_column")


async def _from_form(request: Request, query_name: str | None, text_column: str | None,
                     label_column: str | None) -> tuple[str, parsing.Parsed]:
    """Read a multipart upload: exactly one `file` part, optional `name`, `text_column`,
    `label_column` fields (each may also come as a query parameter)."""
    stream = sliced(request.stream(), parsing.READ_CHUNK)
    try:
        # Room for a file in each known part, so a `name` sent as a file is refused naming
        # `name`, not as "too many files"; the body limit bounds their bytes together.
        form = await MultiPartParser(request.headers, stream, max_files=len(FORM_FIELDS) + 1,
                                     max_fields=8).parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}",
                         code="malformed_multipart") from exc
    try:
        uploads = form.getlist("file")
        if len(uploads) != 1 or not isinstance(uploads[0], UploadFile):
            raise Invalid("file", "a multipart upload needs exactly one 'file' part")
        upload = uploads[0]
        fields = {}
        for key, query_value in zip(FORM_FIELDS, (query_name, text_column, label_column),
                                    strict=True):
            given = form.getlist(key)
            if len(given) > 1:  # as for a repeated JSON key or query parameter: never pick one
                raise Invalid(key, "given more than once; send each field once")
            value = given[0] if given else query_value
            if value is not None and not isinstance(value, str):
                raise Invalid(key, "must be a form field, not a file")
            fields[key] = value
        filename = upload.filename or ""
        ds_name = (parsing.validate_name(fields["name"]) if fields["name"] is not None
                   else _name_from_filename(filename))
        columns = parsing.columns_from(fields["text_column"], fields["label_column"])
        kind = ("csv" if filename.lower().endswith((".csv", ".tsv"))
                or (not filename and upload.content_type == "text/csv") else "jsonl")
        parsed = await run_in_threadpool(READERS[kind], upload.file, columns)
    finally:
        await form.close()  # deletes the spooled temporary file
    return ds_name, parsed


def _name_from_filename(filename: str) -> str:
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        return parsing.validate_name(stem[:parsing.MAX_NAME_CHARS])
    except Invalid:
        return "upload"


@router.get("", response_model=DatasetList)
def list_datasets(db: SessionDep, principal: TrainScope,
                  limit: LimitQuery = DEFAULT_LIST_LIMIT,
                  offset: OffsetQuery = 0) -> Any:
    datasets = service.list_datasets(db=db, viewer=principal, limit=limit, offset=offset)
    return {"datasets": [d.summary() for d in datasets]}


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, db: SessionDep, principal: TrainScope) -> Any:
    return service.get_dataset(db=db, dataset_id=dataset_id, viewer=principal).summary()


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               summary="Delete a dataset (409 dataset_in_use while a job that is not final "
                       "uses it)",
               responses={404: {"description": "no such dataset (or another key's)"},
                          409: {"description": "`dataset_in_use`, naming the jobs"}})
def delete_dataset(dataset_id: str, db: SessionDep, principal: TrainScope) -> Response:
    service.delete_dataset(db=db, dataset_id=dataset_id, viewer=principal)
    return Response(status_code=204)


# Referenced by _UPLOAD_DOC so that the schema is emitted into components.
__all__ = ["router", "DatasetCreate"]

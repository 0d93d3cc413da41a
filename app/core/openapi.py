"""OpenAPI additions: the one error shape on every route, and bearer auth where it applies.

FastAPI documents only 200 and its own 422 shape, which is not what Tailor answers; clients
(and schemathesis, which checks every response against this document) need the truth.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Every status the error handlers can produce on an authenticated route: bad input, auth,
# missing objects, state conflicts, limits, overload and unreachable dependencies.
ERROR_STATUSES = {
    "400": "Malformed request (e.g. invalid JSON, a malformed multipart body)",
    "401": "Missing, unknown or revoked API key",
    "403": "The API key lacks the scope this route needs",
    "404": "No such object",
    "409": "The object's state forbids this (e.g. cancelling a finished job)",
    "413": "Over a limit: body size, rows per dataset, texts per request",
    "415": "Unsupported Content-Type; the error names the accepted media types",
    "422": "A field is invalid; the message names it",
    "429": "Overloaded; retry after Retry-After seconds",
    "503": "Database, broker or an artifact is unavailable; retry after Retry-After seconds",
}
PUBLIC = {"/healthz", "/readyz"}  # answer without a key (liveness and readiness probes)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="What is wrong, naming the field where there is one.")
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def document_errors(schema: dict[str, Any]) -> None:
    """Add the error responses and bearer security to every operation of `schema` in place."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorDetail"] = ErrorDetail.model_json_schema()
    schemas["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}")
    schemas["ErrorBody"].pop("$defs", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API key; required when TAILOR_API_KEYS or stored keys exist."}}
    error = {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path == "/readyz":
                responses["503"] = {"description": "Not ready: the checks name what is down",
                                    "content": {"application/json": {"schema": {}}}}
            if path in PUBLIC:
                continue
            operation["security"] = [{"bearer": []}]
            for status, description in ERROR_STATUSES.items():
                responses[status] = {"description": description, **error}

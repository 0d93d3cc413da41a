"""The AppError hierarchy. Services raise these; one handler in app.main turns them into JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AppError(Exception):
    """An error a client can act on: HTTP status, stable code, human message, details."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class Invalid(AppError):
    """A request that parsed but names something wrong; `field` is the dotted path."""

    status_code = 422
    code = "invalid"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {message}", code=code, details={"field": field})
        self.field = field


class InvalidText(Invalid):
    """A text that cannot be used: empty or invisible, not valid Unicode, NUL, or too long."""

    code = "invalid_text"

    def __init__(self, field: str, message: str, *, reason: str) -> None:
        super().__init__(field, message)
        self.details = {"field": field, "reason": reason}


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class Overloaded(AppError):
    status_code = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class Unavailable(AppError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic `loc` as the rest of the API names fields: ("body", "texts", 0) ->
    "texts[0]", ("body", "task", "labels", 1, "name") -> "task.labels[1].name"."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"

"""Refuse ambiguous or unstorable URLs before any route sees them: NUL characters (PostgreSQL
text cannot hold them; they would surface as a 500), query text that is not UTF-8, and query
parameters given twice (no route takes a list, and silently using the last one hides client
bugs). Request bodies are checked by app.core.strict_json and each service's validation.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, unquote

from starlette.types import ASGIApp, Receive, Scope, Send

NUL = "\x00"


def url_problem(path: str, query: bytes) -> tuple[str, str] | None:
    """Return (field, problem) for the first bad part of the URL, or None."""
    if NUL in unquote(path):
        return "path", "NUL characters are not allowed"
    seen: set[str] = set()
    # latin-1 both ways keeps the percent-decoded bytes as they are, so text that is not UTF-8
    # (`%E9` from a Latin-1 form, `%ED%A0%BD` a lone surrogate) is refused here instead of
    # being replaced by U+FFFD and stored, e.g. as a dataset name.
    for raw_name, raw_value in parse_qsl(query.decode("latin-1"), keep_blank_values=True,
                                         encoding="latin-1"):
        try:
            name = raw_name.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return "query", "a parameter name is not valid UTF-8"
        field = f"query.{name.replace(NUL, '')}"
        try:
            value = raw_value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError as exc:
            return field, (f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at byte "
                           f"{exc.start}); percent-escapes must encode UTF-8 text")
        if NUL in name or NUL in value:
            return field, "NUL characters are not allowed"
        if name in seen:
            return field, "given more than once; send each parameter once"
        seen.add(name)
    return None


class UrlGuardMiddleware:
    """Answer 422 naming the parameter when the path or query string is refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = url_problem(scope.get("path", ""), scope.get("query_string", b""))
            if problem is not None:
                field, message = problem
                body = json.dumps({"error": {
                    "code": "invalid", "message": f"{field}: {message}",
                    "details": {"field": field}}}).encode()
                await send({"type": "http.response.start", "status": 422,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

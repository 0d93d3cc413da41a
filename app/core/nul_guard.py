"""Refuse NUL characters in the URL before they reach the database (PostgreSQL text cannot hold
them, so they would surface as a 500). Request bodies are checked by each service's validation.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, unquote

from starlette.types import ASGIApp, Receive, Scope, Send

NUL = "\x00"


def first_nul_field(path: str, query: bytes) -> str | None:
    """Name the URL part holding a NUL character ("path" or "query.<name>"), or None."""
    if NUL in unquote(path):
        return "path"
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if NUL in name or NUL in value:
            return f"query.{name.replace(NUL, '')}"
    return None


class NulGuardMiddleware:
    """Answer 422 naming the parameter when the path or query string contains a NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = first_nul_field(scope.get("path", ""), scope.get("query_string", b""))
            if field is not None:
                body = json.dumps({"error": {
                    "code": "invalid", "message": f"{field}: NUL characters are not allowed",
                    "details": {"field": field}}}).encode()
                await send({"type": "http.response.start", "status": 422,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

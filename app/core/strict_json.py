"""Strict JSON for every request body and every JSONL line: one parser, one middleware.

The standard library's json accepts what no client means to send and what later code cannot
hold: the same key twice (the last silently wins), NaN and Infinity (not JSON), integers
with thousands of digits, strings with lone surrogates (PostgreSQL and UTF-8 cannot store
them) or NUL (a `\\u0000` escape: PostgreSQL text cannot hold it, and a NUL in an id was a 500
there), and nesting deep enough to exhaust the interpreter's recursion limit (a 500). Here
each is a 4xx naming the problem; routes that take a JSON body also get 415 for any other
Content-Type instead of a misleading validation error.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import anyio
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, BadRequest, Invalid, InvalidText, UnsupportedMediaType
from app.core.texts import lone_surrogate, refuse_nul

# No request of this API nests beyond ~6 levels (a job spec); 64 leaves room for any
# reasonable client while keeping far below Python's recursion limit (~1000).
MAX_JSON_DEPTH = 64
# Integers outside int64 fit no column and no other language's JSON reader.
MAX_JSON_INT = 2**63 - 1
# Bodies larger than this are parsed in a worker thread so the event loop keeps serving.
INLINE_PARSE_BYTES = 64 * 1024
# The request state key under which the middleware leaves the parsed body for routes that
# read their body themselves (POST /datasets), so it is parsed once.
PARSED_BODY_KEY = "strict_json_body"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Decoded UTF-8 holds no surrogates, so a parsed string can only hold one that came from a
# \uD800-\uDFFF escape: without such an escape in the text, no string needs looking at.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Likewise a NUL can only come from a \u0000 escape (a raw one is not valid JSON).
_NUL_ESCAPE = re.compile(r"\\u0000")
# Strings and everything but brackets, removed to leave the bracket skeleton of a document.
_NOT_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^\[\]{}"]+')
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
SKELETON_MAX_CHARS = 1 << 20


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _BadNumber(ValueError):
    def __init__(self, text: str, why: str) -> None:
        super().__init__(text)
        self.text, self.why = text, why


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _BadNumber(name, "NaN and Infinity are not JSON numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text, "the number overflows a 64-bit float")
    return value


def _int64(text: str) -> int:
    if len(text) > 20:  # cheap guard before int(): no int64 has more digits
        raise _BadNumber(text[:24] + "...", "the integer is outside the 64-bit range")
    value = int(text)
    if abs(value) > MAX_JSON_INT:
        raise _BadNumber(text, "the integer is outside the 64-bit range")
    return value


def strict_loads(data: str | bytes, *, where: str = "body") -> Any:
    """Parse one JSON document strictly.

    Args:
        data: the document; bytes must be UTF-8 (a leading BOM is allowed).
        where: the name of the document in errors: "body", "line 7".

    Returns:
        The parsed value (dicts, lists, str, int, float, bool, None).

    Raises:
        BadRequest 400 `malformed_json` (with line/column) for text that is not JSON or bytes
        that are not UTF-8; Invalid 422 `duplicate_key`, `invalid_number` (NaN, Infinity,
        out-of-range numbers) or `too_deep`; InvalidText 422 `invalid_text` naming the path
        (e.g. `records[3].text`) of a string or key holding a lone surrogate or a NUL.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{where}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start}); JSON must be UTF-8", code="malformed_json",
                             details={"field": where, "offset": exc.start}) from exc
    try:
        value = json.loads(data, object_pairs_hook=_unique_pairs, parse_constant=_constant,
                           parse_float=_finite_float, parse_int=_int64)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{where}: malformed JSON: {exc.msg} (line {exc.lineno} column "
                         f"{exc.colno})", code="malformed_json",
                         details={"field": where, "line": exc.lineno, "column": exc.colno}
                         ) from exc
    except _Duplicate as exc:
        raise Invalid(where, f"key {exc.key!r} appears more than once in one object",
                      code="duplicate_key") from exc
    except _BadNumber as exc:
        raise Invalid(where, f"{exc.why} ({exc.text})", code="invalid_number") from exc
    except RecursionError as exc:
        raise Invalid(where, f"nested deeper than {MAX_JSON_DEPTH} levels",
                      code="too_deep") from exc
    if _too_deep(data, value):
        raise Invalid(where, f"nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
    nul = _NUL_ESCAPE.search(data) is not None
    if nul or _SURROGATE_ESCAPE.search(data):
        check_tree(value, where, nul=nul)
    return value


def _too_deep(text: str, value: Any) -> bool:
    """True when a parsed document nests deeper than MAX_JSON_DEPTH.

    Up to SKELETON_MAX_CHARS this runs at C speed over the text: each pass deletes the
    innermost empty `[]` / `{}` pairs of the bracket skeleton, so a skeleton still non-empty
    after MAX_JSON_DEPTH passes is deeper. The regex engine holds the GIL, so larger
    documents are measured by walking the parsed containers instead, which lets the event
    loop run in between.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    if len(text) > SKELETON_MAX_CHARS:
        return _walk_too_deep(value)
    skeleton = _NOT_BRACKET.sub("", text)
    for _ in range(MAX_JSON_DEPTH):
        skeleton = _EMPTY_PAIR.sub("", skeleton)
        if not skeleton:
            return False
    return True


def _walk_too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def check_tree(value: Any, where: str, *, nul: bool = True) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and strings (values or keys) with lone
    surrogates or, when `nul`, NUL characters, naming the first offending path in document
    order. With `nul` False, ASCII strings (which hold no surrogate) are skipped."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            _check_string(node, path)
            continue
        if depth >= MAX_JSON_DEPTH:
            raise Invalid(path, f"nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
        children: list[tuple[Any, str, int]] = []
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            child_path = _child(path, key) if isinstance(key, str) else f"{path}[{key}]"
            if isinstance(key, str):
                _check_string(key, child_path)
            if isinstance(child, dict | list) or (isinstance(child, str)
                                                  and (nul or not child.isascii())):
                children.append((child, child_path, depth + 1))
        stack.extend(reversed(children))


def _child(path: str, key: str) -> str:
    # Fields of the body are named as the validation errors name them ("texts[0]").
    return key if path == "body" else f"{path}.{key}"


def _check_string(text: str, path: str) -> None:
    bad = lone_surrogate(text)
    if bad is not None:
        raise InvalidText(path, f"not valid Unicode: a lone surrogate U+{ord(text[bad]):04X} at "
                                f"character {bad} (a truncated emoji?)", reason="lone_surrogate")
    refuse_nul(text, path)


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` (lowercase, '' when absent)."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json_type(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


async def parse_body(body: bytes) -> Any:
    """strict_loads(body), off the event loop when the body is large."""
    if len(body) <= INLINE_PARSE_BYTES:
        return strict_loads(body)
    return await anyio.to_thread.run_sync(strict_loads, body)


class StrictJsonMiddleware:
    """Parse every JSON request body strictly before a route sees it; answer 415 for a
    non-empty body of any other type, except on the routes that read other types themselves.

    The parsed body is left in the request state (PARSED_BODY_KEY); FastAPI's own parse of
    the same bytes then only ever sees documents that passed here.

    Args:
        raw_body_routes: (method, path) pairs whose route accepts other media types and
            answers 415 itself (POST /datasets takes multipart, JSONL and CSV too).
    """

    def __init__(self, app: ASGIApp, raw_body_routes: frozenset[tuple[str, str]]) -> None:
        self.app = app
        self.raw_body_routes = raw_body_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw_type = headers.get(b"content-type", b"").decode("latin-1")
        media = media_type(raw_type)
        if not is_json_type(media) and (scope["method"], scope["path"]) in self.raw_body_routes:
            await self.app(scope, receive, send)  # the route streams and checks it
            return
        body, tail = await _read_body(receive)
        if body.strip():
            if not is_json_type(media):
                await self._answer(scope, receive, send, _unsupported(raw_type))
                return
            try:
                parsed = await parse_body(body)
            except AppError as exc:
                await self._answer(scope, receive, send, exc)
                return
            scope.setdefault("state", {})[PARSED_BODY_KEY] = parsed
        await self.app(scope, _replay(body, tail, receive), send)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, exc: AppError) -> None:
        response = JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)
        await response(scope, receive, send)


def _unsupported(raw_type: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"Content-Type {raw_type or '(none)'!r} is not accepted here; send the body as "
        "application/json", details={"accepted": ["application/json"],
                                     "received": raw_type or None})


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body (the outer BodyLimitMiddleware bounds it), and a disconnect if seen."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, tail: Message | None, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return tail if tail is not None else await receive()

    return replay


_NOT_PARSED = object()


class ParsedJsonRequest(Request):
    """A request whose `json()` is the body StrictJsonMiddleware already parsed, so a route
    does not parse the same bytes a second time (the FastAPI "custom Request" pattern)."""

    async def json(self) -> Any:
        parsed = self.scope.get("state", {}).get(PARSED_BODY_KEY, _NOT_PARSED)
        return await super().json() if parsed is _NOT_PARSED else parsed


class StrictJsonRoute(APIRoute):
    """Route class for routers with JSON bodies: FastAPI reads the middleware's parse."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            response: Response = await handler(ParsedJsonRequest(request.scope, request.receive))
            return response

        return route

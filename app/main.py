"""The app factory: routers, middleware, one error handler for everything, lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.config import get_settings
from app.core.db import UNAVAILABLE
from app.core.errors import AppError, field_path
from app.core.limits import BodyLimitMiddleware
from app.core.openapi import document_errors
from app.core.strict_json import StrictJsonMiddleware
from app.core.url_guard import UrlGuardMiddleware
from app.datasets.router import router as datasets_router
from app.datasets.schemas import DatasetCreate
from app.evaluations.router import router as evaluations_router
from app.jobs.router import router as jobs_router
from app.keys.router import router as keys_router
from app.ops.metrics import MetricsMiddleware
from app.ops.router import router as ops_router
from app.registry.router import router as registry_router
from app.serving.backend import make_compiler
from app.serving.batcher import MicroBatcher
from app.serving.explain import Explainer
from app.serving.pool import ModelPool
from app.serving.refs import RefCache
from app.serving.router import router as serving_router
from app.ui.router import router as ui_router

log = logging.getLogger("tailor")


def _error(status: int, code: str, message: str, details: Any = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}},
                        status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", f"malformed JSON: {first.get('ctx', {}).get('error', '')}"
    return 422, "validation_error", f"{field_path(first.get('loc', ()))}: {first.get('msg')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                   for e in exc.errors()]
        return _error(status, code, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    async def db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database error: %s", exc)
        return _error(503, "database_unavailable",
                      "the database is unreachable; retry shortly", headers={"Retry-After": "5"})

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, db_down)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal_error", f"internal error ({type(exc).__name__})")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    app.state.pool = ModelPool(settings.artifacts, settings.cache, settings.serving_max_loaded,
                               settings.serving_memory_budget_mb * 1024 * 1024,
                               make_compiler(settings))
    app.state.batcher = MicroBatcher(
        app.state.pool, max_batch=settings.serving_max_batch,
        max_wait_ms=settings.serving_max_wait_ms, max_queue=settings.serving_max_queue,
        max_queue_delay_ms=settings.serving_max_queue_delay_ms, threads=settings.serving_threads)
    app.state.refs = RefCache(settings.serving_ref_cache_seconds)
    app.state.explainer = Explainer(app.state.pool, steps=settings.explain_steps,
                                    max_waiting=settings.explain_max_waiting)
    app.state.batcher.start()
    # What exists now (torch, transformers, the app: ~500k objects) lives as long as the
    # process. Frozen, full collections no longer scan it, so a request that allocates many
    # objects (a 200,000-row upload) costs the others no ~300 ms GC pauses.
    gc.collect()
    gc.freeze()
    yield
    app.state.batcher.stop()


def create_app() -> FastAPI:
    """Build the FastAPI application from the current settings."""
    settings = get_settings()
    app = FastAPI(title="Tailor", version="0.1.0", lifespan=lifespan,
                  description="Distil tailored language models out of large language models: "
                              "submit jobs, watch them, classify with the registered students.")
    for router in (ops_router, datasets_router, jobs_router, registry_router, serving_router,
                   evaluations_router, keys_router, ui_router):
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(StrictJsonMiddleware,  # inside the body limit
                       raw_body_routes=frozenset({("POST", "/datasets")}))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(UrlGuardMiddleware)
    app.add_middleware(MetricsMiddleware)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["*"])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, sub in DatasetCreate.model_json_schema(
                    ref_template="#/components/schemas/{model}").get("$defs", {}).items():
                components.setdefault(name, sub)
            body = DatasetCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            body.pop("$defs", None)
            components["DatasetCreate"] = body
            document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

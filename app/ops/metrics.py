"""Prometheus metrics: request counts and latency by route, jobs by state."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
REQUESTS = Counter("tailor_http_requests_total", "HTTP requests", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("tailor_http_request_seconds", "HTTP request latency",
                    ["method", "route", "status"],
                    registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS = Gauge("tailor_jobs", "Jobs by state", ["state"], registry=REGISTRY)
CLASSIFIED = Counter("tailor_classified_texts_total", "Texts classified", ["model"],
                     registry=REGISTRY)
SERVING_VERSIONS = Gauge("tailor_serving_loaded_versions", "Student versions loaded for serving",
                         registry=REGISTRY)
SERVING_BYTES = Gauge("tailor_serving_model_bytes",
                      "Bytes of model weights loaded for serving (bases + adapters + heads)",
                      registry=REGISTRY)
SERVING_QUEUE = Gauge("tailor_serving_queued_texts", "Texts waiting for a micro-batch",
                      registry=REGISTRY)
SERVING_BATCH = Histogram("tailor_serving_batch_texts", "Texts per forward pass",
                          registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
SERVING_REJECTED = Counter("tailor_serving_rejected_total",
                           "/classify requests refused with 429 (queue full)", registry=REGISTRY)


class MetricsMiddleware:
    """Count and time every HTTP request by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status[0])).inc()
            LATENCY.labels(scope["method"], route, str(status[0])).observe(
                time.perf_counter() - started)

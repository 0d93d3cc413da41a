"""Load generation for the serving benchmark: an async httpx client, bounded in time and count.

Closed loop: `concurrency` clients, each sends its next request when the last one answered.
Open loop: requests start on a fixed schedule whatever the server does (offered load), so an
overloaded server shows up as queueing or refusals rather than as a slower client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

Body = Callable[[str], dict[str, Any]]
TIMEOUT_S = 60.0  # a request that takes longer counts as an error (status 0)


@dataclass
class Sample:
    started: float  # seconds since the run began
    latency: float  # seconds
    status: int  # HTTP status; 0 for a transport error or timeout


async def _one(client: httpx.AsyncClient, path: str, body: dict[str, Any], t0: float,
               out: list[Sample]) -> None:
    started = time.perf_counter()
    try:
        status = (await client.post(path, json=body)).status_code
    except httpx.HTTPError:
        status = 0
    out.append(Sample(started - t0, time.perf_counter() - started, status))


async def closed_loop(url: str, path: str, texts: list[str], body: Body, *, concurrency: int,
                      seconds: float, max_requests: int) -> tuple[list[Sample], float]:
    """Run `concurrency` clients for `seconds` or `max_requests`; return samples and wall."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    samples: list[Sample] = []
    issued = 0
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < max_requests:
                text = texts[issued % len(texts)]
                issued += 1
                await _one(client, path, body(text), t0, samples)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - t0


async def open_loop(url: str, path: str, texts: list[str], body: Body, *, rate: float,
                    seconds: float, max_outstanding: int) -> tuple[list[Sample], int]:
    """Start `rate` requests per second for `seconds`; return samples and requests not sent
    because `max_outstanding` were already in flight (a bound on the client, reported)."""
    limits = httpx.Limits(max_connections=max_outstanding,
                          max_keepalive_connections=max_outstanding)
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    skipped = 0
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        t0 = time.perf_counter()
        for k in range(int(rate * seconds)):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                skipped += 1
                continue
            task = asyncio.create_task(_one(client, path, body(texts[k % len(texts)]), t0,
                                            samples))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return samples, skipped


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def summarise(samples: list[Sample], wall: float) -> dict[str, Any]:
    """Throughput of successful requests and their latency percentiles."""
    ok = [s.latency for s in samples if s.status == 200]
    return {"requests": len(samples), "ok": len(ok),
            "refused_429": sum(1 for s in samples if s.status == 429),
            "errors": sum(1 for s in samples if s.status not in (200, 429)),
            "seconds": round(wall, 2), "throughput_rps": round(len(ok) / wall, 2),
            "p50_ms": percentile_ms(ok, 50), "p95_ms": percentile_ms(ok, 95),
            "p99_ms": percentile_ms(ok, 99)}


BUCKET = re.compile(r'^tailor_http_request_seconds_bucket\{(?P<labels>[^}]*)\} (?P<n>\S+)$')


def server_buckets(metrics_text: str, route: str, status: int) -> dict[float, float]:
    """Cumulative counts per latency bucket (seconds) the server recorded for route+status."""
    out: dict[float, float] = {}
    for line in metrics_text.splitlines():
        m = BUCKET.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        if labels.get("route") == route and labels.get("status") == str(status):
            out[float(labels["le"])] = float(m.group("n"))
    return out


def server_side(before: str, after: str, route: str, status: int) -> dict[str, Any]:
    """Server-measured latency of the requests between two /metrics scrapes: count, share
    within 50 ms, and the bucket bounds that hold the median and the 99th percentile."""
    b0, b1 = server_buckets(before, route, status), server_buckets(after, route, status)
    counts = {le: n - b0.get(le, 0.0) for le, n in sorted(b1.items())}
    total = counts.get(float("inf"), 0.0)

    def bound(q: float) -> float | None:
        return next((le * 1000 for le, n in counts.items() if total and n >= q * total), None)

    return {"count": int(total),
            "share_within_50ms": round(counts.get(0.05, 0.0) / total, 4) if total else None,
            "p50_at_most_ms": bound(0.5), "p99_at_most_ms": bound(0.99)}

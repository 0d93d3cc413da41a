"""The micro-batcher: texts from concurrent /classify requests share forward passes.

One thread runs the model. A batch starts when `max_batch` texts wait or the oldest has
waited `max_wait_ms`; it takes texts of one base model in arrival order (versions may mix),
sorts them by length and splits them where padding would grow past PAD_SLACK, so short
texts do not pay for long ones.

Texts arrive already validated and tokenized, one request at a time (service.classify), so
no input can make a batch fail for the requests it shares. Should a forward pass raise
anyway, each request in it is run again alone and only those that fail alone are failed.

The queue is bounded twice: in texts, and in the time its texts would wait at the measured
throughput. A request past either bound is refused at once with 429 and a Retry-After from
that estimate, so overload never turns into unbounded waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from app.core.errors import Overloaded, Unavailable
from app.ops.metrics import SERVING_BATCH, SERVING_QUEUE, SERVING_REJECTED
from app.serving.pool import ModelPool, Served

log = logging.getLogger(__name__)
# A chunk may hold up to 25% padding tokens before it is split; smaller chunks than
# MIN_CHUNK cost more in per-call overhead than the padding they save.
PAD_SLACK = 1.25
MIN_CHUNK = 8
THROUGHPUT_SMOOTHING = 0.2  # weight of the newest batch in the texts/s estimate


Result = list[tuple[np.ndarray, bool]]  # per text: calibrated probabilities, truncated


@dataclass
class Pending:
    """One request: its version, its texts' results as they arrive, its future."""

    served: Served
    results: list[tuple[np.ndarray, bool] | None]
    remaining: int
    future: Future[Result]


@dataclass
class Item:
    """One text of a request: its position there, its token ids, whether they were cut."""

    pending: Pending
    index: int
    ids: list[int]
    truncated: bool
    enqueued: float


def chunks(items: list[Item]) -> list[list[Item]]:
    """Split length-sorted items where padding would exceed PAD_SLACK of the real tokens."""
    out: list[list[Item]] = []
    current: list[Item] = []
    tokens = 0
    for item in items:
        n = len(item.ids)
        if len(current) >= MIN_CHUNK and n * (len(current) + 1) > PAD_SLACK * (tokens + n):
            out.append(current)
            current, tokens = [], 0
        current.append(item)
        tokens += n
    if current:
        out.append(current)
    return out


class MicroBatcher:
    """Queue + one model thread.

    Args:
        pool: the loaded versions.
        max_batch: texts per batch at most.
        max_wait_ms: how long the oldest text may wait for the batch to fill.
        max_queue: texts queued at most; more are refused with 429.
        max_queue_delay_ms: refuse new texts while the queued ones need longer than this to
            clear at the measured throughput.
        threads: torch intra-op threads for the model thread (the only one running torch).
    """

    def __init__(self, pool: ModelPool, *, max_batch: int, max_wait_ms: float, max_queue: int,
                 max_queue_delay_ms: float, threads: int) -> None:
        self.pool, self.max_batch, self.max_queue = pool, max_batch, max_queue
        self.max_wait, self.max_delay = max_wait_ms / 1000, max_queue_delay_ms / 1000
        self.threads = threads
        self.throughput = 0.0  # texts per second, smoothed; 0 until the first batch
        self._items: deque[Item] = deque()
        self._reserved = 0  # texts admitted whose request is still resolving and tokenizing
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def queued(self) -> int:
        """Texts waiting for the model, including admitted ones not yet submitted."""
        return len(self._items) + self._reserved

    def start(self) -> None:
        torch.set_num_threads(self.threads)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="tailor-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
            left, self._items = list(self._items), deque()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._fail(left, Unavailable("the server is shutting down", code="shutting_down"))

    def admit(self, n: int) -> None:
        """Reserve room for `n` texts, or raise Overloaded at once when they do not fit.

        Admitting before the request is resolved and tokenized bounds that stage too. Every
        admit is followed by one `submit` of the `n` texts or one `cancel(n)`.
        """
        with self._cond:
            self.check_open(n)
            self._reserved += n

    def check_open(self, n: int = 0) -> None:
        """Raise Overloaded when `n` more texts do not fit (n=0: when the queue is full)."""
        queued = self.queued
        delay = queued / self.throughput if self.throughput else 0.0
        if queued + max(n, 1) > self.max_queue or delay > self.max_delay:
            SERVING_REJECTED.inc()
            raise Overloaded(f"the serving queue is full ({queued} texts waiting, about "
                             f"{delay:.1f} s of work); retry shortly", retry_after=delay)

    def cancel(self, n: int) -> None:
        """Give back an admitted reservation whose request failed before `submit`."""
        with self._cond:
            self._reserved -= n

    def submit(self, served: Served, ids: list[list[int]],
               truncated: list[bool] | None = None) -> Future[Result]:
        """Queue one admitted request's tokenized texts; the future gets their results, in
        order, or the exception of a forward pass that fails with this request alone.

        Args:
            served: the version, pinned; the pin is taken over (released when answered).
            ids: token ids per text, as `ModelPool.encode` gives them.
            truncated: per text, whether it was cut to max_length (default: none was).
        """
        cut = truncated if truncated is not None else [False] * len(ids)
        future: Future[Result] = Future()
        pending = Pending(served, [None] * len(ids), len(ids), future)
        now = time.monotonic()
        with self._cond:
            if not self._running:
                raise Unavailable("the server is shutting down", code="shutting_down")
            self._reserved -= len(ids)
            self._items.extend(Item(pending, i, t, c, now)
                               for i, (t, c) in enumerate(zip(ids, cut, strict=True)))
            SERVING_QUEUE.set(len(self._items))
            self._cond.notify()
        return future

    def _loop(self) -> None:
        busy_since: float | None = None  # end of the last batch, if work was waiting then
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.perf_counter()
            n = len(batch)
            for chunk in chunks(sorted(batch, key=lambda it: len(it.ids))):
                self._run(chunk)
            ended = time.perf_counter()
            # While work keeps waiting, time between batches (CPU and GIL contention, other
            # processes) slows the drain too: measure from the previous batch's end.
            rate = n / max(ended - (busy_since or started), 1e-6)
            self.throughput = (rate if not self.throughput else
                               (1 - THROUGHPUT_SMOOTHING) * self.throughput
                               + THROUGHPUT_SMOOTHING * rate)
            busy_since = ended if self._items else None

    def _take(self) -> list[Item] | None:
        with self._cond:
            while self._running and not self._items:
                self._cond.wait()
            if not self._running:
                return None
            deadline = self._items[0].enqueued + self.max_wait
            while self._running and len(self._items) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._running:
                return None
            base = self._items[0].pending.served.base_key
            batch: list[Item] = []
            rest: deque[Item] = deque()
            for item in self._items:
                if len(batch) < self.max_batch and item.pending.served.base_key == base:
                    batch.append(item)
                else:
                    rest.append(item)
            self._items = rest
            SERVING_QUEUE.set(len(rest))
            return batch

    def _run(self, chunk: list[Item]) -> None:
        """One forward pass over `chunk`; on failure, each request in it again alone."""
        chunk = [it for it in chunk if not it.pending.future.done()]  # failed already
        if not chunk:
            return
        SERVING_BATCH.observe(len(chunk))
        try:
            probs = self.pool.forward([(it.pending.served, it.ids) for it in chunk])
        except Exception as exc:
            requests: dict[int, list[Item]] = {}
            for item in chunk:
                requests.setdefault(id(item.pending), []).append(item)
            if len(requests) == 1:  # a bug: answer this request with 500, keep serving
                log.exception("forward pass failed")
                self._fail(chunk, exc)
                return
            # Find the request(s) that cause it: the others must not pay for them.
            log.warning("forward pass over %d requests failed (%s: %s); running each alone",
                        len(requests), type(exc).__name__, exc)
            for items in requests.values():
                self._run(items)
            return
        for item, p in zip(chunk, probs, strict=True):
            pending = item.pending
            pending.results[item.index] = (p, item.truncated)
            pending.remaining -= 1
            if pending.remaining == 0 and not pending.future.done():
                self.pool.release(pending.served)
                pending.future.set_result([x for x in pending.results if x is not None])

    def _fail(self, items: list[Item], exc: BaseException) -> None:
        for item in items:
            if not item.pending.future.done():
                self.pool.release(item.pending.served)
                item.pending.future.set_exception(exc)

"""`client.jobs`: submit (or estimate), follow, list, cancel, delete distillation jobs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from tailor.errors import JobFailed, TailorError
from tailor.specs import load_spec
from tailor.transport import StreamLost, Transport

FINAL = frozenset({"succeeded", "failed", "cancelled"})
# A dropped event stream resumes after the last event seen (Last-Event-ID), this many times
# in a row, a pause apart; a server restart takes a few seconds.
RECONNECTS = 20
RECONNECT_PAUSE_S = 1.0

ProgressCallback = Callable[[dict[str, Any]], None]


def _job_path(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


class Jobs:
    """Distillation jobs.

    A job is `{"id": "job_...", "name", "state", "phase", "progress": 0..1, "metrics",
    "warnings": [{"code", "message"}], "error": None | {"code", "message"},
    "model": None | {"name", "version"}, "spec", "created_at", "updated_at", ...}`; states
    go queued -> annotating -> distilling -> evaluating -> registering -> succeeded, or to
    failed / cancelled. Another key's job answers like an absent one (404 `not_found`).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, spec: Mapping[str, Any] | str | os.PathLike[str],
               idempotency_key: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Submit a job; return it (state `queued`).

        Args:
            spec: the body of POST /jobs (`name`, `task.labels`, `data.dataset_id` are
                required), or the path of a YAML/JSON file holding it.
            idempotency_key: the same key again answers the first submission's job.
            dry_run: validate as a submission is validated, create nothing, and return
                `{"dry_run": True, "estimate": {"texts", "teacher_calls", "training_steps",
                "phases": {"annotate" | "distill" | "evaluate": {"seconds", ...}},
                "seconds", "basis", "rates"}}`. `idempotency_key` is then recorded
                nowhere, but one already used with another body is refused (422
                `idempotency_mismatch`) as the real submission would refuse it.

        Raises:
            TailorError: `spec_unreadable` / `invalid_spec` for a file; the server's 422
                naming the field, 404 for an unknown dataset, ...
        """
        body = load_spec(spec) if isinstance(spec, str | os.PathLike) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"dry_run": "true"} if dry_run else {}
        return self._t.request("POST", "/jobs", json=body, headers=headers, params=params)

    def get(self, job_id: str) -> dict[str, Any]:
        """One job. Raises TailorError 404 `not_found`."""
        return self._t.request("GET", _job_path(job_id))

    def page(self, state: str | None = None, name: str | None = None, limit: int | None = None,
             offset: int | None = None) -> dict[str, Any]:
        """One page of jobs, newest first, as GET /jobs answers: `{"jobs": [...],
        "next_offset": int | None}`."""
        params = {k: v for k, v in {"state": state, "name": name, "limit": limit,
                                    "offset": offset}.items() if v is not None}
        return self._t.request("GET", "/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop at its next step; return it (`cancel_requested` true).

        Raises:
            TailorError: 409 `job_final` when it has already ended; 404.
        """
        return self._t.request("POST", f"{_job_path(job_id)}/cancel")

    def delete(self, job_id: str) -> None:
        """Delete a final job and its work files (never a registered version's files).

        Raises:
            TailorError: 409 `job_not_final` while it is queued or running (cancel it
                first); 404 `not_found` (another key's job too).
        """
        self._t.request("DELETE", _job_path(job_id))

    def events(self, job_id: str, after: str | None = None, read_timeout: float | None = None
               ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield the job's events as they happen, from the first (or after event id `after`):
        (name, event) where name is `state`, `progress`, ... and event is `{"id", "kind",
        "state", "phase", "progress", "data", "at", "_sse_id"}`; the last is ("end",
        {"state"}). See Transport.events for errors."""
        return self._t.events(f"{_job_path(job_id)}/events", after, read_timeout)

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Follow the job's event stream until it ends; return the succeeded job.

        Args:
            on_progress: called with each event (see `events`), in order, from the job's
                first event on; a broken stream resumes where it stopped.
            timeout: seconds to wait at most; None waits as long as the job runs.

        Raises:
            JobFailed: the job ended `failed` or `cancelled` (its error code and message;
                the final job in `.job`).
            TailorError: 404 for an unknown job; `timeout`; `stream_lost` when the stream
                could not be resumed RECONNECTS times in a row.
        """
        self.get(job_id)  # a clean 404 before anything is followed
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        for attempt in range(RECONNECTS + 1):
            try:
                for name, event in self.events(job_id, last_id, _left(deadline)):
                    if name == "end":
                        return self._final(job_id)
                    last_id = event.get("_sse_id", last_id)
                    if on_progress is not None:
                        on_progress(event)
                    _check(deadline, job_id)
            except StreamLost:
                _check(deadline, job_id)
                if attempt == RECONNECTS:
                    raise
            time.sleep(RECONNECT_PAUSE_S)
        job = self.get(job_id)
        if job["state"] in FINAL:
            return self._final(job_id)
        raise TailorError(None, "stream_lost",
                          f"lost the event stream while job {job_id} was {job['state']}")

    def _final(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] != "succeeded":
            raise JobFailed(job)
        return job

    # Defined last: inside the class body, `list` names this method from here on.
    def list(self, state: str | None = None, name: str | None = None,
             limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """Jobs this key may see, newest first (one page; see `page` for `next_offset`)."""
        return self.page(state, name, limit, offset)["jobs"]


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.1, deadline - time.monotonic())


def _check(deadline: float | None, job_id: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TailorError(None, "timeout", f"job {job_id} did not end in time")

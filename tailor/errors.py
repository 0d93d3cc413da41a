"""The client's one exception type, and the one kind of it that `jobs.wait` adds."""

from __future__ import annotations

from typing import Any


class TailorError(Exception):
    """Anything that went wrong talking to Tailor.

    Args:
        status: the HTTP status of the server's answer; None when no answer came (network
            error, timeout) or the client refused before sending (a missing file).
        code: a stable, machine-readable code: the server's `error.code`
            (`not_found`, `invalid`, `payload_too_large`, ...) or one of the client's own
            (`connection_error`, `timeout`, `invalid_response`, `stream_lost`,
            `config_not_found`, `config_unreadable`, `spec_unreadable`, `invalid_spec`,
            `unsupported_file`, `file_unreadable`, `file_unwritable`).
        message: for people; the server's own message, verbatim, when it sent one.
        details: the server's `error.details` (often `{"field": "texts[3]"}`), or None.
    """

    def __init__(self, status: int | None, code: str, message: str, details: Any = None
                 ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.code, self.status and f"HTTP {self.status}")
                          if part)
        return f"{self.message} ({where})" if where else self.message


class JobFailed(TailorError):
    """A job that `jobs.wait` followed ended `failed` or `cancelled`.

    `code` and `message` are the job's own `error` (for a cancelled job without one,
    `job_cancelled`); `job` is the final job object, as GET /jobs/{id} returns it.
    """

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        state = job.get("state", "failed")
        super().__init__(None, error.get("code") or f"job_{state}",
                         error.get("message") or f"job {job.get('id')} was {state}",
                         details=error.get("details"))
        self.job = job

"""The message broker as the API sees it: wake a worker for a job, say whether it answers.

Routers receive it as a FastAPI dependency (`BrokerDep`) and never import worker code; a
test or another deployment overrides `get_broker` (`app.dependency_overrides`). The message
only wakes a worker: the job row is the truth, and the worker sweeper re-wakes a job whose
message was lost.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends

from worker import celery_app


class Broker(Protocol):
    """What the API needs of the broker."""

    def enqueue_job(self, job_id: str) -> None:
        """Publish the wake-up message for `job_id`; raise if the broker does not take it."""

    def reachable(self, *, retry: bool = True) -> bool:
        """Say whether the broker accepts a connection right now (each attempt bounded by
        TAILOR_BROKER_TIMEOUT_SECONDS). `retry` tries once more after a failure (what
        /readyz does); without it the first failure answers, so a submission refused for
        an unreachable broker does not keep its client waiting."""


class CeleryBroker:
    """The Celery broker of the settings (Redis, or the filesystem transport embedded)."""

    def enqueue_job(self, job_id: str) -> None:
        celery_app.enqueue_job(job_id)

    def reachable(self, *, retry: bool = True) -> bool:
        return celery_app.broker_reachable(retry=retry)


def get_broker() -> Broker:
    """The broker dependency (stateless: the Celery app is cached by worker.celery_app)."""
    return CeleryBroker()


BrokerDep = Annotated[Broker, Depends(get_broker)]

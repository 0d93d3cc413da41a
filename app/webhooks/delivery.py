"""One webhook delivery attempt: reload the job, check the target again, POST it signed.

Called by the `tailor.notify` Celery task (worker/tasks.py), which retries with exponential
backoff when this raises DeliveryFailed. Every attempt is recorded on the job as a
`webhook` event (`GET /jobs/{id}/events`), so an owner can see why a receiver heard nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import SplitResult

import httpx

from app.core.config import get_settings
from app.core.db import session_scope
from app.jobs import lifecycle
from app.jobs.schemas import JobOut
from app.jobs.service import job_to_dict
from app.models import Job
from app.webhooks.signing import signed_headers
from app.webhooks.targets import IPAddress, TargetRefused

log = logging.getLogger(__name__)
DELIVERED, REFUSED, NO_TARGET = "delivered", "refused", "no target"


class DeliveryFailed(Exception):
    """An attempt that may succeed later (receiver down, 5xx, timeout): retry it."""


def deliver(job_id: str, event: str, *, attempt: int, last: bool) -> str:
    """POST the job object for `event` to its `notify.url`, once.

    Args:
        attempt: 1 for the first try (recorded with the outcome).
        last: no retry follows if this one fails (recorded as `gave_up`).

    Returns:
        DELIVERED, REFUSED (the target failed the policy: never retried) or NO_TARGET.

    Raises:
        DeliveryFailed: no 2xx answer (a redirect counts as none: it could lead anywhere).
    """
    settings = get_settings()
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is None or not (job.spec or {}).get("notify"):
            return NO_TARGET
        url = job.spec["notify"]["url"]
        body = JobOut.model_validate(job_to_dict(job)).model_dump_json().encode()
    outcome: dict[str, Any] = {"event": event, "attempt": attempt}
    try:
        policy = settings.webhook_policy
        if not settings.webhook_secret or not policy.enabled:
            raise TargetRefused("webhooks_disabled", "the operator has turned webhooks off")
        parts = policy.check_url(url)
        addresses = policy.resolve(parts)  # each checked: no internal address, ever
        status = _post(parts, addresses[0], body, settings.webhook_secret, event, job_id,
                       settings.webhook_timeout_seconds)
    except TargetRefused as exc:
        _record(job_id, {**outcome, "outcome": REFUSED, "code": exc.code,
                         "message": exc.message})
        return REFUSED
    except (OSError, httpx.HTTPError) as exc:  # DNS, connection refused, timeout, TLS
        _fail(job_id, {**outcome, "error": type(exc).__name__}, last)
        raise DeliveryFailed(f"{type(exc).__name__}") from exc
    if 200 <= status < 300:
        _record(job_id, {**outcome, "outcome": DELIVERED, "status": status})
        return DELIVERED
    _fail(job_id, {**outcome, "status": status}, last)
    raise DeliveryFailed(f"HTTP {status}")


def _post(parts: SplitResult, address: IPAddress, body: bytes, secret: str, event: str,
          job_id: str, timeout: float) -> int:
    """POST to the checked `address` itself, with the URL's host in Host and in TLS (SNI and
    certificate check), so no second DNS answer can send it elsewhere; the status code."""
    host = parts.hostname or ""
    netloc = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    if parts.port:
        netloc += f":{parts.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    headers = signed_headers(secret, body, event=event, delivery=f"{job_id}.{event}")
    headers["Host"] = parts.netloc.rpartition("@")[2]
    headers["User-Agent"] = "Tailor-Webhook/1"
    # trust_env=False: a proxy from the environment would resolve the name again itself.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        response = client.post(pinned, content=body, headers=headers,
                               extensions={"sni_hostname": host})
    return response.status_code


def _fail(job_id: str, outcome: dict[str, Any], last: bool) -> None:
    outcome["outcome"] = "gave_up" if last else "failed"
    log.warning("webhook for job %s: attempt %s %s (%s)", job_id, outcome["attempt"],
                outcome["outcome"], outcome.get("status") or outcome.get("error"))
    _record(job_id, outcome)


def _record(job_id: str, data: dict[str, Any]) -> None:
    with session_scope() as db:
        job = db.get(Job, job_id)
        if job is not None:
            lifecycle.record_event(db, job, "webhook", data)

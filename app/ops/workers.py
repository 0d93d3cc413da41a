"""Worker heartbeats: what workers write (beat, forget) and what /readyz asks (liveness).

Plain SQLAlchemy on app.models, no FastAPI or Celery: the worker's heartbeat thread writes
through it and the API's readiness check reads through it. Both sides use their own clock
(as job leases do), so API and worker hosts must keep time with NTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.models import WorkerHeartbeat
from app.models.base import utcnow

# Rows of workers that died without saying goodbye are kept this long for whoever inspects
# the table after an incident, then dropped by the live workers' beats.
FORGET_DEAD_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Liveness:
    """What the heartbeat table says: `live` fresh workers; `last_seen_s` ago the freshest
    beat of any worker (None: no worker ever beat, or all said goodbye)."""

    live: int
    last_seen_s: float | None


def beat(db: Session, *, worker_id: str, hostname: str, pid: int, queues: list[str],
         started_at: datetime, now: datetime | None = None) -> None:
    """Insert or refresh this worker's row (the caller commits)."""
    now = now or utcnow()
    db.merge(WorkerHeartbeat(id=worker_id, hostname=hostname, pid=pid, queues=queues,
                             started_at=started_at, last_seen=now))
    db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen < now - FORGET_DEAD_AFTER))


def forget(db: Session, worker_id: str) -> None:
    """Remove this worker's row: it is stopping cleanly (the caller commits)."""
    db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))


def liveness(db: Session, *, fresh_s: float, now: datetime | None = None) -> Liveness:
    """Count workers whose last beat is at most `fresh_s` seconds old at `now`."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=fresh_s)
    live = db.scalar(select(func.count()).select_from(WorkerHeartbeat)
                     .where(WorkerHeartbeat.last_seen >= cutoff)) or 0
    newest = db.scalar(select(func.max(WorkerHeartbeat.last_seen)))
    age = None if newest is None else max(0.0, (now - newest).total_seconds())
    return Liveness(live=int(live), last_seen_s=age)

"""One row per running Celery worker, rewritten every few seconds: /readyz reads it.

A worker that stops cleanly deletes its row; one that dies leaves a row whose `last_seen`
stops moving, so "is any worker alive" is a question about fresh rows, never about rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    # "<celery node name>/<pid>": node names repeat across restarts on one host (and the
    # embedded worker is always celery@<host>), the pid tells the incarnations apart.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSONType)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

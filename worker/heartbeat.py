"""The worker's heartbeat: a row in `worker_heartbeats` rewritten every
TAILOR_WORKER_HEARTBEAT_SECONDS while the worker consumes; /readyz reads it.

It beats from a thread of the worker's main process, from `worker_ready` (the consumer is
connected and taking messages) to `worker_shutdown` (where the row is deleted, so a clean
stop shows at once). A worker that dies stops beating and /readyz turns 503 once its last
beat is older than TAILOR_WORKER_FRESH_SECONDS. Prefork children die with the main process
(Celery sets their parent-death signal), so a beating main process means a working pool.
The same code runs on SQLite (embedded) and PostgreSQL (distributed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from app.core.config import Settings, get_settings
from app.jobs import seam
from app.models.base import utcnow
from worker.periodic import PeriodicThread

log = logging.getLogger(__name__)


class Heartbeat(PeriodicThread):
    """Beats every TAILOR_WORKER_HEARTBEAT_SECONDS until `stop()` (see PeriodicThread).

    Args:
        settings: the worker's settings (database URL, beat period).
        node: the Celery node name, e.g. `celery@host`; the row id is `<node>/<pid>`.
        queues: the queues this worker consumes, recorded for operators.
    """

    what = "heartbeat"

    def __init__(self, settings: Settings, node: str, queues: list[str]) -> None:
        super().__init__(settings, "tailor-heartbeat", settings.worker_heartbeat_seconds)
        self.worker_id = f"{node}/{os.getpid()}"
        self.queues = queues
        self.started_at = utcnow()

    def tick(self) -> None:
        self.beat_once()

    def finish(self) -> None:
        # Best effort: a row left behind just goes stale.
        with contextlib.suppress(Exception), self.sessions.begin() as db:
            seam.forget(db, self.worker_id)

    def beat_once(self) -> None:
        """Write this worker's row with the current time."""
        with self.sessions.begin() as db:
            seam.beat(db, worker_id=self.worker_id, hostname=socket.gethostname(),
                      pid=os.getpid(), queues=self.queues, started_at=self.started_at)

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating, delete the row and wait up to `timeout` seconds for the thread."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)


_running: list[Heartbeat] = []
# How long worker shutdown waits for the goodbye (row deletion) before going on without it.
STOP_TIMEOUT_S = 5.0


def _start(sender: Any = None, **_: Any) -> None:
    if _running:
        return
    node = str(getattr(sender, "hostname", None) or f"celery@{socket.gethostname()}")
    try:
        queues = sorted(sender.app.amqp.queues.consume_from)
    except AttributeError:  # not sent by a Celery consumer (tests): record what we know
        queues = []
    heartbeat = Heartbeat(get_settings(), node, queues)
    _running.append(heartbeat)
    heartbeat.start()
    log.info("heartbeat %s every %ss", heartbeat.worker_id,
             heartbeat.settings.worker_heartbeat_seconds)


def _stop(**_: Any) -> None:
    while _running:
        _running.pop().stop(STOP_TIMEOUT_S)


def install() -> None:
    """Beat from the worker's main process while it consumes (never from pool children)."""
    worker_ready.connect(_start, weak=False)
    worker_shutdown.connect(_stop, weak=False)

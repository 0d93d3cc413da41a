"""A daemon thread of the worker's main process that does one database task every period.

The sweeper and the heartbeat are both such threads. Each owns its database engine: an
engine is never shared with the prefork children Celery forks from this process.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

from sqlalchemy.orm import sessionmaker

from app.core.config import Settings
from app.core.db import make_engine

log = logging.getLogger(__name__)


class PeriodicThread(threading.Thread, ABC):
    """Calls `tick()` at once and then every `period_s` seconds until `stopped` is set.

    A failing tick (a database or broker outage) is logged and retried next period; after
    the last tick `finish()` runs and the engine is disposed. Subclasses set `what` (for the
    log) and implement `tick()`.

    Args:
        settings: the worker's settings (database URL).
        name: the thread's name, e.g. "tailor-sweeper".
        period_s: seconds between ticks.
    """

    what = "periodic task"

    def __init__(self, settings: Settings, name: str, period_s: float) -> None:
        super().__init__(daemon=True, name=name)
        self.settings = settings
        self.period_s = period_s
        self.stopped = threading.Event()
        self.engine = make_engine(settings.db_url)
        self.sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    @abstractmethod
    def tick(self) -> object:
        """One period's work."""

    def finish(self) -> None:
        """Runs once after the last tick (before the engine is disposed)."""

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.tick()
            except Exception:  # an outage: /readyz and the next period deal with it
                log.warning("%s failed; retrying in %ss", self.what, self.period_s,
                            exc_info=True)
            self.stopped.wait(self.period_s)
        self.finish()
        self.engine.dispose()

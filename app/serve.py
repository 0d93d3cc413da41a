"""`python -m app.serve`: embedded Tailor in one command — migrate, one worker, the API.

Distributed deployments run the pieces separately (see docker-compose.yml); this launcher is
for one machine: SQLite + filesystem broker by default, or whatever TAILOR_* URLs say. The
worker runs under a supervisor (app.supervisor) that restarts it when it dies; when it gives
up on a crash loop, the API stops too and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from app.core.config import get_settings
from app.core.migrate import upgrade
from app.supervisor import RestartPolicy, WorkerSupervisor

log = logging.getLogger("tailor.serve")
STARTUP_FAILURE = 3  # uvicorn's own exit status when the server could not start (port taken)
GAVE_UP = 1


class _Server(uvicorn.Server):
    """uvicorn's server that first tells the supervisor to restart nothing on SIGINT/SIGTERM:
    a Ctrl-C reaches the worker too, and its exit must not read as a crash."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)

    def request_exit(self) -> None:
        """Shut down as if signalled (safe from another thread: the loop polls the flag)."""
        self.should_exit = True


def worker_command(concurrency: int = 1) -> list[str]:
    """The embedded worker's command line: `python -m worker` (node `tailor-<pid>@<host>`,
    queues `distill` and `notify` for webhooks, log level INFO), without the gossip, mingle
    and event heartbeats that only matter between workers (the filesystem transport cannot
    broadcast them)."""
    return [sys.executable, "-m", "worker", "-c", str(concurrency), "--without-gossip",
            "--without-mingle", "--without-heartbeat"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-worker", action="store_true", help="API only")
    parser.add_argument("--skip-migrations", action="store_true",
                        help="assume a separate step ran `alembic upgrade head`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    settings.home.mkdir(parents=True, exist_ok=True)
    if not args.skip_migrations:
        upgrade()
    config = uvicorn.Config("app.main:create_app", factory=True, host=host, port=port,
                            log_level="warning", timeout_graceful_shutdown=5)
    supervisor = None if args.no_worker else WorkerSupervisor(
        worker_command(), RestartPolicy.from_settings(settings), env=os.environ.copy())
    server = _Server(config, on_exit=supervisor.begin_stop if supervisor else lambda: None)
    if supervisor is not None:
        supervisor.on_give_up = server.request_exit
        supervisor.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        log.info("Tailor on http://%s:%d (home %s)", host, port, settings.home)
        config.load_app()
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
    if supervisor is not None and supervisor.gave_up:
        log.error("Tailor stopped: %s", supervisor.gave_up)
        return GAVE_UP
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())

"""`python -m app.serve`: embedded Tailor in one command — migrate, one worker, the API.

Distributed deployments run the pieces separately (see docker-compose.yml); this launcher is
for one machine: SQLite + filesystem broker by default, or whatever TAILOR_* URLs say.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from types import FrameType

import uvicorn

from app.core.config import get_settings
from app.core.migrate import upgrade

log = logging.getLogger("tailor.serve")


def worker_command(concurrency: int = 1) -> list[str]:
    """The Celery worker command line for the distill queue."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "distill",
            "-c", str(concurrency), "--pool", "prefork", "-l", "INFO", "--without-gossip",
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
    worker = None if args.no_worker else subprocess.Popen(worker_command(), env=os.environ.copy())

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        log.info("Tailor on http://%s:%d (home %s)", host, port, settings.home)
        uvicorn.run("app.main:create_app", factory=True, host=host, port=port,
                    log_level="warning", timeout_graceful_shutdown=5)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

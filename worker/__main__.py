"""`python -m worker [CELERY WORKER OPTIONS]`: one Tailor worker on the `distill` (jobs) and
`notify` (webhook deliveries) queues.

This is `celery -A worker.celery_app worker` with the defaults a Tailor worker needs, so that
several workers started the same way on one host never clash:

- node name `tailor-<pid>@<host>`: Celery's default, `celery@<host>`, is the same for every
  worker on a host, and two workers sharing it share one remote-control mailbox (Celery warns
  `DuplicateNodenameWarning`); the pid is the worker's main process (this process: the
  command is exec'd, not spawned), the one /readyz's heartbeat rows and job leases name;
- `-l INFO`, so the log says which worker claimed which job;
- one job at a time (`-c 1`, one per GPU) on the prefork pool.

Options given on the command line come after these defaults, and Celery takes the last value
of an option, so `-n gpu0@%h` or `-c 2` override them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# worker.celery_app.QUEUE and NOTIFY_QUEUE; not imported here because this process only execs
# celery, and importing the Celery app would build it (and its broker folders) twice.
QUEUE = "distill"
NOTIFY_QUEUE = "notify"
QUEUES = f"{QUEUE},{NOTIFY_QUEUE}"


def node_name(pid: int) -> str:
    """The default Celery node name: `tailor-<pid>@%h` (Celery expands `%h` to the host)."""
    return f"tailor-{pid}@%h"


def celery_argv(extra: Sequence[str], pid: int) -> list[str]:
    """The `celery` arguments for a worker with main process `pid`; `extra` comes last."""
    return ["-A", "worker.celery_app", "worker", "-Q", QUEUES, "-c", "1", "--pool", "prefork",
            "-l", "INFO", "-n", node_name(pid), *extra]


def main(argv: Sequence[str] | None = None) -> None:
    """Replace this process with the Celery worker (same pid, so the node name holds)."""
    args = list(sys.argv[1:] if argv is None else argv)
    os.execv(sys.executable, [sys.executable, "-m", "celery", *celery_argv(args, os.getpid())])


if __name__ == "__main__":
    main()

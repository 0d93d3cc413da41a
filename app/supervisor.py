"""Keep the embedded worker alive: restart it with backoff when it dies, give up on a loop.

`python -m app.serve` (and `make serve`, `tailor serve`) runs one Celery worker beside the
API. Whatever kills it (the OOM killer, a segfault in a native library, a stray `kill`), the
supervisor logs why, waits, and starts a new one; jobs the dead worker held are resumed by
the new worker's sweeper once their lease expires. A worker that keeps dying has a cause a
restart cannot fix, so after too many crashes in a short window the supervisor stops trying
and says so. Distributed deployments leave this to their process manager (compose,
systemd, Kubernetes) and run workers with `celery worker` directly.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.core.config import Settings

log = logging.getLogger("tailor.serve")

# How long a worker asked to stop may finish its current step before it is killed.
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a dead worker and when to give up (seconds; see Settings).

    Args:
        backoff_s: delay before restarting after the first crash in the window; it doubles
            with every further crash in the window.
        backoff_max_s: the longest delay.
        max_crashes: crashes tolerated within the window; one more means giving up.
        window_s: how far back crashes count.
    """

    backoff_s: float
    backoff_max_s: float
    max_crashes: int
    window_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(backoff_s=settings.worker_restart_backoff_seconds,
                   backoff_max_s=settings.worker_restart_backoff_max_seconds,
                   max_crashes=settings.worker_restart_max_crashes,
                   window_s=settings.worker_restart_window_seconds)


class CrashLog:
    """The crashes within the policy's window; each new one yields a delay or a verdict."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.times: deque[float] = deque()

    def record(self, now: float) -> float | None:
        """Note a crash at `now` (monotonic seconds); the delay before restarting, or None
        when more than `max_crashes` fell within the window (give up)."""
        while self.times and self.times[0] <= now - self.policy.window_s:
            self.times.popleft()
        self.times.append(now)
        recent = len(self.times)
        if recent > self.policy.max_crashes:
            return None
        return float(min(self.policy.backoff_s * 2 ** (recent - 1), self.policy.backoff_max_s))


def describe_exit(returncode: int) -> str:
    """`killed by SIGKILL (signal 9)` or `exited with status 3`, from a Popen returncode."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


class WorkerSupervisor(threading.Thread):
    """Runs `command` until `stop()`, restarting it by `policy` when it exits on its own.

    Args:
        command: the worker's argv (app.serve.worker_command()).
        policy: restart delays and the give-up rule.
        env: the worker's environment (None: inherit).
        on_give_up: called once, from this thread, after the supervisor gave up; `serve`
            uses it to shut the API down so the failure cannot go unnoticed.
        clock: monotonic seconds (tests may pass their own).

    After `run()` ends, `gave_up` holds the message when it gave up (else None) and
    `restarts` counts the workers started after the first.
    """

    def __init__(self, command: Sequence[str], policy: RestartPolicy, *,
                 env: dict[str, str] | None = None,
                 on_give_up: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(daemon=True, name="tailor-worker-supervisor")
        self.command = list(command)
        self.env = env
        self.on_give_up = on_give_up
        self.clock = clock
        self.crashes = CrashLog(policy)
        self.gave_up: str | None = None
        self.restarts = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # a stop() never misses a worker started meanwhile
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before the first start)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def run(self) -> None:
        while True:
            with self._lock:
                if self.stopping.is_set():
                    return
                proc = self._proc = subprocess.Popen(self.command, env=self.env)
            log.info("worker started (pid %d)", proc.pid)
            returncode = proc.wait()
            if self.stopping.is_set():
                return
            why = describe_exit(returncode)
            delay = self.crashes.record(self.clock())
            policy = self.crashes.policy
            if delay is None:
                self.gave_up = (
                    f"the worker died {len(self.crashes.times)} times within "
                    f"{policy.window_s:g} s (last: pid {proc.pid} {why}); giving up. "
                    "Its log above says why; fix the cause and start Tailor again "
                    "(TAILOR_WORKER_RESTART_* set how many crashes are tolerated).")
                log.error(self.gave_up)
                if self.on_give_up is not None:
                    self.on_give_up()
                return
            log.warning("worker pid %d %s; restarting it in %.1f s (crash %d of %d tolerated "
                        "within %g s)", proc.pid, why, delay, len(self.crashes.times),
                        policy.max_crashes, policy.window_s)
            if self.stopping.wait(delay):
                return
            self.restarts += 1

    def begin_stop(self) -> None:
        """Restart no more (the worker was asked to stop, or is about to be); never blocks."""
        self.stopping.set()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop restarting, SIGTERM the worker (SIGKILL after `timeout` s), wait for both."""
        with self._lock:
            self.stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop within %g s; killing it", proc.pid,
                            timeout)
                proc.kill()
                proc.wait()
        if self.is_alive():
            self.join(timeout)

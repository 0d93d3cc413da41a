"""Helpers for tests that run Tailor as real processes: API, worker, and their environment."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"succeeded", "failed", "cancelled"}
# Where the tests' tiny models may live: tests/conftest.py sets it to pytest's temporary root,
# and make_env allows it (TAILOR_MODEL_SOURCES) in every Tailor the tests start.
TEST_MODEL_SOURCES = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=5)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Stack:
    """A running Tailor: env for its processes, the API's URL, and the processes themselves."""

    home: Path
    env: dict[str, str]
    port: int = 0
    procs: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def spawn(self, name: str, args: Iterable[str], env: dict[str, str] | None = None) -> Proc:
        log = self.home / f"{name}-{len(self.procs)}.log"
        fh = log.open("wb")
        popen = subprocess.Popen(list(args), cwd=ROOT, env={**self.env, **(env or {})}, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_api(self, worker: bool = False) -> Proc:
        """Start the API (`app.serve --no-worker`) and wait until /healthz answers.

        With `worker`, a worker (`start_worker()`) is spawned right after it rather than
        after /healthz: each process spends seconds importing torch before it serves, and
        side by side the two imports overlap. The API migrates the database before its own
        imports, long before the worker's first query; were the worker first anyway, its
        heartbeat and sweeper retry on their next period."""
        self.port = self.port or free_port()
        proc = self.spawn("api", [sys.executable, "-m", "app.serve", "--no-worker",
                                  "--port", str(self.port)])
        if worker:
            self.start_worker()
        try:
            wait_for(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200,
                     60, what="API /healthz")
        except TimeoutError:
            raise RuntimeError(f"API did not start:\n{proc.tail()}") from None
        return proc

    def start_serve(self, command: list[str], ready_path: str = "/readyz",
                    timeout: float = 60) -> Proc:
        """Start `command` (a `serve` that takes `--port`) on a free port and wait until
        `ready_path` answers 200; on a timeout stop everything and raise with the logs."""
        self.port = free_port()
        proc = self.spawn("serve", [*command, "--port", str(self.port)])
        try:
            wait_for(lambda: httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200,
                     timeout, what=f"{' '.join(command[-2:])} {ready_path}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(self.logs()) from None
        return proc

    def start_worker(self, *extra_args: str, env: dict[str, str] | None = None) -> Proc:
        from app.serve import worker_command

        proc = self.spawn("worker", [*worker_command(), *extra_args], env=env)
        time.sleep(0.5)
        if proc.popen.poll() is not None:
            raise RuntimeError(f"worker died at start:\n{proc.tail()}")
        return proc

    def stop(self) -> None:
        for proc in self.procs:  # signal all first: they shut down in parallel
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()

    def discard(self) -> None:
        """Kill every process group at once: the teardown of a stack whose database, broker
        queues and home are thrown away with it. A graceful `stop()` costs 2-6 s a stack
        (Celery's blocking loop on the filesystem broker drains for 2 s between checks of its
        stop flag, and billiard's pool threads sleep 1 s a loop), for nothing a test asserts;
        tests of shutdown itself, and stacks whose database outlives their workers (whose
        goodbye deletes the heartbeat row /readyz reads), use `stop()`."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.procs)


def make_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update({"TAILOR_HOME": str(home), "PYTHONUNBUFFERED": "1",
                "TAILOR_CACHE_DIR": str(home / "cache"), "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1"})
    if TEST_MODEL_SOURCES:
        env["TAILOR_MODEL_SOURCES"] = TEST_MODEL_SOURCES
    env.update(overrides)
    return env


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in FINAL else None

    return wait_for(final, timeout, interval=0.3, what=f"job {job_id} to finish")


def job_body(name: str, dataset_id: str, teacher: str, student: str,
             eval_dataset_id: str | None = None, **distillation: Any) -> dict[str, Any]:
    """A job request on the tiny fixture models (labels match the tiny teacher's vocabulary)."""
    return {
        "name": name,
        "task": {"labels": [{"name": "crisis", "description": "a disaster or emergency"},
                            {"name": "calm", "description": "no emergency",
                             "verbalizer": "none"}],
                 "instruction": "You monitor news for emergencies."},
        "teacher": {"model": teacher},
        "student": {"model": student, "max_length": 32},
        "data": {"dataset_id": dataset_id, "eval_dataset_id": eval_dataset_id},
        "distillation": {"epochs": 2, "batch_size": 8, **distillation},
    }


@contextmanager
def embedded_home(tmp_path: Path, monkeypatch: Any,
                  revision: str = "head") -> Iterator[Path]:
    """Point Settings at a fresh embedded home (SQLite + filesystem broker) whose database
    is migrated to `revision`; every other TAILOR_* variable is cleared."""
    from app.core.config import get_settings
    from app.core.db import reset_caches
    from app.core.migrate import upgrade

    for key in list(os.environ):
        if key.startswith("TAILOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAILOR_MODEL_SOURCES", TEST_MODEL_SOURCES)
    reset_caches()
    upgrade(get_settings().db_url, revision)
    yield tmp_path / "home"
    reset_caches()

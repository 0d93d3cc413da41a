"""The embedded worker's supervisor: restart delays, the give-up rule, exit reasons, stop."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from app.core.config import Settings
from app.supervisor import CrashLog, RestartPolicy, WorkerSupervisor, describe_exit

POLICY = RestartPolicy(backoff_s=1.0, backoff_max_s=5.0, max_crashes=3, window_s=60.0)
FAST = RestartPolicy(backoff_s=0.01, backoff_max_s=0.05, max_crashes=3, window_s=60.0)


def test_delays_double_up_to_the_cap_then_it_gives_up():
    crashes = CrashLog(POLICY)
    assert [crashes.record(t) for t in (0.0, 1.0, 2.0)] == [1.0, 2.0, 4.0]
    assert crashes.record(3.0) is None  # a fourth crash within 60 s: more than max_crashes
    capped = CrashLog(RestartPolicy(backoff_s=1.0, backoff_max_s=5.0, max_crashes=9,
                                    window_s=60.0))
    assert [capped.record(float(t)) for t in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_crashes_older_than_the_window_are_forgotten():
    crashes = CrashLog(POLICY)
    assert crashes.record(0.0) == 1.0
    assert crashes.record(30.0) == 2.0
    assert crashes.record(61.0) == 2.0  # the crash at 0 s left the window: backoff falls too
    assert crashes.record(200.0) == 1.0  # a worker that crashes once an hour is never abandoned
    assert crashes.record(201.0) == 2.0
    assert crashes.record(202.0) == 4.0
    assert crashes.record(203.0) is None


@pytest.mark.parametrize(("returncode", "text"), [
    (-9, "killed by SIGKILL (signal 9)"), (-11, "killed by SIGSEGV (signal 11)"),
    (3, "exited with status 3"), (0, "exited with status 0"),
    (-200, "killed by an unknown signal (signal 200)")])
def test_exit_reasons_name_the_signal_or_status(returncode, text):
    assert describe_exit(returncode) == text


def test_policy_comes_from_settings():
    settings = Settings(worker_restart_backoff_seconds=2, worker_restart_backoff_max_seconds=8,
                        worker_restart_max_crashes=4, worker_restart_window_seconds=90)
    assert RestartPolicy.from_settings(settings) == RestartPolicy(2.0, 8.0, 4, 90.0)


def _supervise(code: str, policy: RestartPolicy = FAST) -> tuple[WorkerSupervisor, list[str]]:
    called: list[str] = []
    sup = WorkerSupervisor([sys.executable, "-c", code], policy,
                           on_give_up=lambda: called.append("gave up"))
    sup.start()
    sup.join(30)
    assert not sup.is_alive()
    return sup, called


def test_a_worker_that_exits_at_once_is_restarted_then_given_up_on(caplog):
    caplog.set_level("INFO", logger="tailor.serve")
    sup, called = _supervise("import sys; sys.exit(3)")
    assert called == ["gave up"]
    assert sup.restarts == 3  # started 4 times: the first plus 3 tolerated crashes
    assert sup.gave_up is not None
    assert "died 4 times within 60 s" in sup.gave_up and "exited with status 3" in sup.gave_up
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all("exited with status 3" in w for w in warnings)
    assert "restarting it in 0.0 s (crash 1 of 3" in warnings[0]
    assert any(r.levelname == "ERROR" and "giving up" in r.getMessage() for r in caplog.records)


def test_a_worker_killed_by_a_signal_says_which():
    sup, called = _supervise("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                             RestartPolicy(0.01, 0.01, max_crashes=1, window_s=60.0))
    assert called == ["gave up"] and sup.restarts == 1
    assert sup.gave_up is not None and "killed by SIGKILL (signal 9)" in sup.gave_up


def test_a_worker_that_was_killed_once_is_replaced_and_keeps_running():
    # The first incarnation kills itself; the next ones live until stopped.
    sup = WorkerSupervisor([sys.executable, "-c", "import time; time.sleep(60)"], FAST)
    sup.start()
    deadline = time.monotonic() + 10
    while sup.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first = sup.pid
    assert first is not None
    subprocess.run(["kill", "-KILL", str(first)], check=True)
    while (sup.pid in (None, first)) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = sup.pid
    assert second not in (None, first) and sup.restarts == 1 and sup.gave_up is None
    started = time.monotonic()
    sup.stop(timeout=5)
    assert time.monotonic() - started < 5  # SIGTERM ends it; no restart after a stop
    assert not sup.is_alive() and sup.restarts == 1
    assert sup._proc is not None and sup._proc.returncode == -15


def test_no_restart_once_asked_to_stop():
    sup = WorkerSupervisor([sys.executable, "-c", "import time; time.sleep(0.2)"], FAST)
    sup.begin_stop()  # e.g. the user pressed Ctrl-C, which reached the worker too
    sup.start()
    sup.join(5)
    assert not sup.is_alive() and sup.pid is None and sup.restarts == 0

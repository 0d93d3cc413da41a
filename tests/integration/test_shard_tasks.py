"""The shard task's body (worker/shards.run_shard) on real Redis and a real teacher server,
called in-process: it works a shard only while its pass wants it and it holds the lease,
stops at the next batch once the pass is stopped (a cancelled or finished job), and leaves a
teacher failure for the coordinator to report."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.core.config import get_settings
from app.core.db import reset_caches
from tests.fixtures.latency_teacher import running
from tests.support import embedded_home, wait_for
from worker import shards
from worker.distill.cache import TeacherCache
from worker.distill.prompts import Prompt
from worker.distill.shards import Shard
from worker.shards import Leases, pass_dir, read_error, read_result, run_shard

pytestmark = pytest.mark.integration
JOB = "job_00000000000000ab"
PROMPT = Prompt("default", "Is this a crisis? Message: {text}", ("crisis", "none"))
TEXTS = tuple(f"{'flood' if i % 2 else 'market'} report {i}" for i in range(6))


@pytest.fixture
def shard_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str):
    """Settings of a worker on the test Redis; yields a function that runs one shard."""
    with embedded_home(tmp_path, monkeypatch):
        monkeypatch.setenv("TAILOR_BROKER_URL", redis_url)
        monkeypatch.setenv("TAILOR_JOB_LEASE_SECONDS", "5")
        # A worker process keeps its teacher, cache and Redis connection: start fresh.
        for name in ("_loaded", "_leases_open", "_cache_open"):
            monkeypatch.setattr(shards, name, type(getattr(shards, name))())

        def serve(**options: int):
            return running(**options)

        def allow(base: str) -> str:
            monkeypatch.setenv("TAILOR_MODEL_SOURCES", f"openai+{base}")
            reset_caches()
            return f"openai+{base}/v1?model=fake"

        yield serve, allow
    reset_caches()


def _new_pass() -> tuple[str, Path]:
    call = uuid.uuid4().hex
    folder = pass_dir(JOB, call)
    folder.mkdir(parents=True)
    return call, folder


def _asked(base: str) -> int:
    return int(httpx.get(f"{base}/stats").json()["requests"])


def test_a_shard_is_worked_once_and_only_while_its_pass_wants_it(shard_env):
    serve, allow = shard_env
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve() as base:
        uri = allow(base)
        assert run_shard(JOB, uuid.uuid4().hex, 0, uri, shard) == "pass over"  # no folder
        call, folder = _new_pass()
        assert run_shard(JOB, call, 0, uri, shard) == "annotated"
        found = read_result(folder, 0)
        assert found is not None and found[0].logprobs.shape == (len(TEXTS), 2)
        assert np.isfinite(found[0].logprobs).all()
        cache = TeacherCache(get_settings().cache / "teacher.sqlite")
        assert len(cache.get(f"openai:{base}/v1#fake", PROMPT.id, TEXTS)) == len(TEXTS)
        cache.close()
        assert run_shard(JOB, call, 0, uri, shard) == "done or taken"  # a second delivery
        assert _asked(base) == len(TEXTS)

        call, _ = _new_pass()  # another worker holds this shard's lease
        other = Leases(get_settings())
        other.owner = "elsewhere:1:abc"
        assert other.claim(call, 0)
        assert run_shard(JOB, call, 0, uri, shard) == "done or taken"
        other.stop(call)
        assert run_shard(JOB, call, 1, uri, shard) == "pass over"
        other.close()
        assert _asked(base) == len(TEXTS)
        assert run_shard("job_../../etc", call, 0, uri, shard) == "malformed shard message"


def test_a_stopped_pass_stops_its_running_shard_at_the_next_batch(shard_env):
    serve, allow = shard_env
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(latency_s=0.3) as base:
        uri = allow(base)
        call, folder = _new_pass()
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(
            run_shard(JOB, call, 0, uri, shard)))
        worker.start()
        wait_for(lambda: _asked(base) >= 1, 10, interval=0.01, what="the first batch")
        Leases(get_settings()).stop(call)  # what the coordinator does on cancel or failure
        worker.join(10)
        assert outcome == ["stopped"]
        assert read_result(folder, 0) is None
        assert _asked(base) == 2  # the first batch only, of three


def test_a_failing_teacher_is_left_for_the_coordinator(shard_env, monkeypatch):
    from worker.distill.teachers import openai_compat

    serve, allow = shard_env
    monkeypatch.setattr(openai_compat, "time", type("T", (), {
        "sleep": staticmethod(lambda _s: None), "perf_counter": staticmethod(time.perf_counter)}))
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(fail_after=2) as base:
        uri = allow(base)
        call, folder = _new_pass()
        assert run_shard(JOB, call, 0, uri, shard) == "failed: teacher_error"
        error = read_error(folder, 0)
        assert error is not None and error[0] == "teacher_error" and "503" in error[1]
        assert read_result(folder, 0) is None

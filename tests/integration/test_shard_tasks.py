"""The shard task's body (worker/shards.run_shard) on real Redis and a real teacher server,
called in-process: it works a shard only while its pass wants it and it holds the lease,
stops at the next batch once the pass is stopped (a cancelled or finished job), and leaves a
teacher failure for the coordinator to report."""

from __future__ import annotations

import shutil
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
from tests.integration.report import record_input
from tests.support import embedded_home, free_port, wait_for
from worker import shards
from worker.distill.cache import TeacherCache
from worker.distill.prompts import Prompt
from worker.distill.shards import Shard
from worker.distill.teachers import TeacherScores
from worker.distill.teachers.openai_compat import OpenAITeacher
from worker.shard_files import pass_dir, read_error, read_result, write_result
from worker.shard_leases import LeaseKeeper, Leases
from worker.shards import CeleryShards, cache_identity, end_pass, end_stale_passes, run_shard

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
        assert run_shard(JOB, call, "0", uri, shard) == "malformed shard message"  # type: ignore[arg-type]
        assert run_shard(JOB, call, 0, uri, shard, "float16") == "malformed shard message"
        # Hostile or garbled messages for a live pass end as malformed, never a crash.
        live, _ = _new_pass()
        for bad in ((JOB, live, 0, {"uri": uri}, shard), (JOB, live, 0, uri, [shard]),
                    (JOB, live, 0, uri, shard, ["bfloat16"]), (JOB, live, 0, uri, shard, None)):
            assert run_shard(*bad) == "malformed shard message", bad[3:]  # type: ignore[arg-type]
        record_input("hostile or garbled shard messages", ["tailor.annotate_shard (run_shard)"],
                     ["job id with ../", "index as a string", "precision float16, a list, "
                      "null", "teacher URI as an object", "payload as a list"],
                     ["'malformed shard message', no teacher loaded, no crash, lease freed"])


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
    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(fail_after=2) as base:
        uri = allow(base)
        call, folder = _new_pass()
        assert run_shard(JOB, call, 0, uri, shard) == "failed: teacher_error"
        error = read_error(folder, 0)
        assert error is not None and error[0] == "teacher_error" and "503" in error[1]
        assert read_result(folder, 0) is None


def _collect(uri: str, parts: list[Shard], call: str, folder: Path) -> np.ndarray:
    """What the coordinator gathers for a pass, other workers' result files included."""
    leases = Leases(get_settings())
    try:
        got = CeleryShards(JOB, uri, get_settings())._collect(
            leases, OpenAITeacher(uri), parts, None, lambda _n: None, call, folder)
    finally:
        leases.close()
    return np.concatenate([g.logprobs for g in got])


def test_a_corrupt_or_misshapen_result_file_is_redone_never_used(shard_env):
    serve, allow = shard_env
    parts = [Shard((PROMPT,), TEXTS[:3], batch_size=2), Shard((PROMPT,), TEXTS[3:], batch_size=2)]
    with serve() as base:
        uri = allow(base)
        whole = OpenAITeacher(uri).score(PROMPT, list(TEXTS), batch_size=2).logprobs
        call, folder = _new_pass()
        (folder / "0.safetensors").write_bytes(b"\0" * 16)  # a rename that lost its data
        write_result(folder, 1, TeacherScores(np.zeros((2, 2), np.float32), None), "x")
        got = _collect(uri, parts, call, folder)  # neither crashes the job nor shifts rows
        np.testing.assert_allclose(got, whole, rtol=1e-6)
        assert not (folder / "0.safetensors").exists()
        assert not (folder / "1.safetensors").exists()


def test_the_coordinator_finishes_its_pass_while_redis_is_down(shard_env, monkeypatch):
    serve, allow = shard_env
    parts = [Shard((PROMPT,), TEXTS[:3], batch_size=2), Shard((PROMPT,), TEXTS[3:], batch_size=2)]
    with serve() as base:
        uri = allow(base)
        whole = OpenAITeacher(uri).score(PROMPT, list(TEXTS), batch_size=2).logprobs
        monkeypatch.setenv("TAILOR_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
        reset_caches()
        call, folder = _new_pass()
        np.testing.assert_allclose(_collect(uri, parts, call, folder), whole, rtol=1e-6)
        leases = Leases(get_settings())
        end_pass(leases, call, folder)  # no stop key without Redis: the folder goes anyway
        leases.close()
        assert not folder.exists()


def test_a_holder_retakes_a_lease_redis_lost_but_never_one_another_took(shard_env):
    reset_caches()  # the fixture's broker URL
    mine, other = Leases(get_settings()), Leases(get_settings())
    other.owner = "elsewhere:1:abc"
    call = uuid.uuid4().hex
    assert mine.claim(call, 0)
    mine.redis.delete(f"tailor:shard:{call}:0")  # Redis restarted without its keys
    assert mine.renew(call, 0) and mine.holder(call, 0) == mine.owner
    mine.redis.delete(f"tailor:shard:{call}:0")
    assert other.claim(call, 0)
    assert not mine.renew(call, 0) and mine.holder(call, 0) == other.owner
    mine.close()
    other.close()


def _running_shard(base: str, uri: str, call: str, shard: dict) -> tuple[threading.Thread,
                                                                         list[str]]:
    """A worker working shard 0 of `call` in a thread, past its first teacher batch."""
    outcome: list[str] = []
    asked = _asked(base)
    worker = threading.Thread(target=lambda: outcome.append(run_shard(JOB, call, 0, uri, shard)))
    worker.start()
    wait_for(lambda: _asked(base) > asked, 10, interval=0.01, what="the first batch")
    return worker, outcome


def test_a_new_attempt_stops_the_shards_of_its_dead_predecessors_pass(shard_env):
    """Attempt 1's worker died mid-pass: its pass folder and queued shards stay behind, with
    no stop key. Attempt 2 ends that pass before it starts its own."""
    serve, allow = shard_env
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(latency_s=0.3) as base:
        uri = allow(base)
        call, folder = _new_pass()
        worker, outcome = _running_shard(base, uri, call, shard)
        leases = Leases(get_settings())
        end_stale_passes(leases, JOB)
        assert not folder.exists() and leases.stopped(call)
        leases.close()
        worker.join(10)
        assert outcome == ["stopped"]
        assert run_shard(JOB, call, 1, uri, shard) == "pass over"


def test_a_shard_stops_when_its_pass_folder_goes_without_a_stop_key(shard_env):
    """The coordinator ended the pass while Redis was down (no stop key): the folder it
    removed is enough, and the shard stops instead of failing on its result file."""
    serve, allow = shard_env
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(latency_s=0.3) as base:
        uri = allow(base)
        call, folder = _new_pass()
        worker, outcome = _running_shard(base, uri, call, shard)
        shutil.rmtree(folder)
        worker.join(10)
        assert outcome == ["stopped"]
        assert _asked(base) == 2  # the first batch only, of three


def test_the_coordinator_reads_a_shard_file_only_once_it_is_there(shard_env, monkeypatch):
    """While other workers hold every shard, each look is one listing of the pass folder,
    not a file read per shard (thousands of shards on a network volume)."""
    reset_caches()  # the fixture's broker URL
    parts = [Shard((PROMPT,), (text,)) for text in TEXTS]
    call, folder = _new_pass()
    other = Leases(get_settings())
    other.owner = "elsewhere:1:abc"
    assert all(other.claim(call, i) for i in range(len(parts)))
    reads: list[int] = []
    real = shards.read_result

    def counted(folder: Path, index: int, shard: Shard | None = None):  # noqa: ANN202
        reads.append(index)
        return real(folder, index, shard)

    monkeypatch.setattr(shards, "read_result", counted)
    looks = [0]

    def tick(n: int) -> None:
        looks[0] += n == 0
        if looks[0] == 5:  # the other workers finish, all at once
            for i in range(len(parts)):
                write_result(folder, i, TeacherScores(np.full((1, 2), -i, np.float32), None),
                             cache_identity(get_settings()))

    leases = Leases(get_settings())
    got = CeleryShards(JOB, "openai+http://127.0.0.1:9/v1?model=fake", get_settings())._collect(
        leases, OpenAITeacher("openai+http://127.0.0.1:9/v1?model=fake"), parts, None, tick,
        call, folder)
    leases.close()
    other.close()
    assert [float(g.logprobs[0, 0]) for g in got] == [-float(i) for i in range(len(parts))]
    assert sorted(reads) == list(range(len(parts)))


def test_the_keeper_holds_a_lease_only_while_its_holder_makes_progress(shard_env):
    reset_caches()  # the fixture's broker URL (a 5 s lease)
    leases = Leases(get_settings())
    call = uuid.uuid4().hex
    assert leases.claim(call, 0)
    keeper = LeaseKeeper(leases, call, 0, stall_s=0.5)
    keeper.start()
    for _ in range(12):  # 1.2 s of batches, each within the bound: the lease is kept
        time.sleep(0.1)
        keeper.progress()
    assert not keeper.stalled.is_set() and leases.holder(call, 0) == leases.owner
    # No batch for the bound: the lease is given up (freed at once, not left to expire).
    wait_for(keeper.stalled.is_set, 3, interval=0.02, what="the keeper to see the stall")
    assert keeper.lost.is_set() and leases.holder(call, 0) is None
    assert not keeper.finish()
    fine = LeaseKeeper(leases, call, 1, stall_s=30)
    assert leases.claim(call, 1)
    fine.start()
    assert fine.finish() and leases.holder(call, 1) == leases.owner
    leases.close()


def test_a_holder_whose_teacher_hangs_gives_its_shard_up_and_never_reports_it(shard_env,
                                                                               monkeypatch):
    """The teacher answers the first batch, then holds every request: the holder gives the
    lease up after the stall bound, the coordinator takes the shard, and when the holder's
    call finally fails (its request deadline) it writes neither a result nor an error."""
    from worker.distill.teachers import openai_compat

    serve, allow = shard_env
    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setenv("TAILOR_SHARD_STALL_SECONDS", "0.5")
    monkeypatch.setenv("TAILOR_OPENAI_API_KEY", "stuck")
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    with serve(hold_key="stuck", hold_after=2) as base:
        uri = allow(base)
        teacher = OpenAITeacher(uri)
        teacher.deadline_s = 0.5  # the held requests fail after 3 tries of 0.5 s
        shards._loaded[uri, "float32"] = teacher
        call, folder = _new_pass()
        started = time.monotonic()
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(
            run_shard(JOB, call, 0, uri, shard)))
        worker.start()
        wait_for(lambda: _asked(base) >= 1, 10, interval=0.01, what="the first batch")
        coordinator = Leases(get_settings())
        coordinator.owner = "coordinator:1:abc"
        wait_for(lambda: coordinator.claim(call, 0), 5, interval=0.02,
                 what="the stalled holder to give its lease up")
        given_up = time.monotonic() - started
        assert 0.5 < given_up < 3, given_up  # the bound (its first batch was in time)
        worker.join(10)
        assert outcome == ["stopped"]
        assert read_result(folder, 0) is None and read_error(folder, 0) is None
        assert coordinator.holder(call, 0) == coordinator.owner  # its lease left alone
        # One batch, then the held one's tries (the first to fail cancels the other's).
        assert 2 + openai_compat.RETRIES <= _asked(base) <= 2 + 2 * openai_compat.RETRIES
        coordinator.close()


def test_the_coordinators_own_stalled_shard_that_then_fails_ends_the_pass(shard_env,
                                                                          monkeypatch):
    """The coordinator works a shard itself and its teacher hangs: it gives the lease up
    after the stall bound, and when the call fails at its deadline the pass fails with the
    teacher's code (nobody else would redo the shard: retaking it could loop forever)."""
    from worker.distill.shards import ShardFailed
    from worker.distill.teachers import openai_compat

    serve, allow = shard_env
    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setenv("TAILOR_SHARD_STALL_SECONDS", "0.2")
    monkeypatch.setenv("TAILOR_OPENAI_API_KEY", "stuck")
    parts = [Shard((PROMPT,), TEXTS[:3], batch_size=2), Shard((PROMPT,), TEXTS[3:], batch_size=2)]
    with serve(hold_key="stuck", hold_after=0) as base:
        uri = allow(base)
        teacher = OpenAITeacher(uri)
        teacher.deadline_s = 0.4
        call, folder = _new_pass()
        outcome: list[BaseException] = []

        def coordinate() -> None:
            leases = Leases(get_settings())
            try:
                CeleryShards(JOB, uri, get_settings())._collect(
                    leases, teacher, parts, None, lambda _n: None, call, folder)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)
            finally:
                leases.close()

        thread = threading.Thread(target=coordinate, daemon=True)
        thread.start()
        thread.join(15)
        assert not thread.is_alive(), "the coordinator kept retaking its stalled shard"
        assert len(outcome) == 1 and isinstance(outcome[0], ShardFailed), outcome
        assert outcome[0].code == "teacher_unreachable" and outcome[0].done == 0


def test_a_shard_worker_scores_in_the_coordinators_teacher_precision(shard_env, tmp_path,
                                                                     monkeypatch):
    """The message carries the coordinator's resolved teacher.precision: the worker loads
    its teacher in it, so every score of a job comes from one function, cached under the
    same teacher id the coordinator reads (`+bf16` apart from float32 entries)."""
    from tests.fixtures.tiny import build_teacher
    from worker.distill.sources import resolve
    from worker.distill.teachers import HFTeacher

    path = build_teacher(tmp_path / "teacher")
    monkeypatch.setenv("TAILOR_MODEL_SOURCES", str(tmp_path))
    reset_caches()
    shard = Shard((PROMPT,), TEXTS, batch_size=2).to_dict()
    local = HFTeacher(resolve(str(path), tmp_path / "models"), "cpu")
    cache = TeacherCache(get_settings().cache / "teacher.sqlite")
    answers = {}
    for precision, suffix in (("bfloat16", "+bf16"), ("float32", "")):
        call, folder = _new_pass()
        assert run_shard(JOB, call, 0, str(path), shard, precision) == "annotated"
        found = read_result(folder, 0)
        assert found is not None
        answers[precision] = found[0].logprobs
        stored = cache.get(local.id + suffix, PROMPT.id, TEXTS)
        assert len(stored) == len(TEXTS), precision
    cache.close()
    np.testing.assert_allclose(answers["float32"], local.score(PROMPT, TEXTS).logprobs,
                               atol=1e-5)
    assert not np.array_equal(answers["bfloat16"], answers["float32"])


class _SlowLocalTeacher:
    """A local teacher whose every forward batch takes `batch_s` (a big batch on a CPU)."""

    hidden_size, total_params, precision, id = 0, 0, "float32", "slow-local"

    def __init__(self, batch_s: float) -> None:
        self.batch_s, self.batches = batch_s, 0

    def score(self, prompt: Prompt, texts, *, batch_size: int, on_batch=None, **_: object
              ) -> TeacherScores:
        for start in range(0, len(texts), batch_size):
            time.sleep(self.batch_s)
            self.batches += 1
            if on_batch:
                on_batch(len(texts[start:start + batch_size]))
        return TeacherScores(np.zeros((len(texts), len(prompt.options)), np.float32), None)


def test_a_healthy_batch_larger_than_the_measured_one_is_no_stall(shard_env, monkeypatch):
    """TAILOR_SHARD_STALL_SECONDS was argued from a 16-text batch of 256 tokens; a job may
    ask for 64 texts a batch (up to 512 of 4096 tokens). A shard worker's healthy batch that
    takes longer than the plain bound but no longer per token is progress: the worker keeps
    its lease and delivers the shard, instead of giving it up to be redone (and judged a
    stall again) by whoever takes it next."""
    from worker.shards import stall_bound

    monkeypatch.setenv("TAILOR_SHARD_STALL_SECONDS", "0.3")
    reset_caches()
    texts = tuple(f"report {i}" for i in range(64))
    part = Shard((PROMPT,), texts, batch_size=64)
    assert stall_bound(0.3, part) >= 0.3 * 64 / 16
    assert stall_bound(0.3, Shard((PROMPT,), texts, batch_size=16, max_text_tokens=128)) == 0.3
    # The shard's own size bounds a batch too: 6 texts under batch_size 512 are 6 texts.
    assert stall_bound(0.3, Shard((PROMPT,), TEXTS, batch_size=512)) == 0.3
    teacher = _SlowLocalTeacher(batch_s=0.8)  # past 0.3 s, within 64/16 of it
    monkeypatch.setattr(shards, "_teacher", lambda *_a: teacher)
    call, folder = _new_pass()
    assert run_shard(JOB, call, 0, "local", part.to_dict()) == "annotated"
    assert teacher.batches == 1 and read_result(folder, 0) is not None


def test_the_coordinator_finishes_its_own_slow_shard_instead_of_retaking_it(shard_env,
                                                                           monkeypatch):
    """A big local teacher on a CPU takes longer per batch than the stall bound (set too low
    for it). The coordinator frees the lease at the bound, but finishes and uses the shard
    it started: dropping it to retake it redid the same slow batch forever."""
    monkeypatch.setenv("TAILOR_SHARD_STALL_SECONDS", "0.3")
    reset_caches()
    part = Shard((PROMPT,), TEXTS, batch_size=4, max_text_tokens=64)  # bound: 0.3 s
    teacher = _SlowLocalTeacher(batch_s=0.8)
    call, folder = _new_pass()
    got: list[object] = []
    leases = Leases(get_settings())

    def coordinate() -> None:
        try:
            got.append(CeleryShards(JOB, "local", get_settings())._collect(
                leases, teacher, [part], None, lambda _n: None, call, folder))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            got.append(exc)

    thread = threading.Thread(target=coordinate, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), f"the shard was retaken ({teacher.batches} batches)"
    assert len(got) == 1 and isinstance(got[0], list), got
    assert teacher.batches == 2  # 6 texts, 4 a batch: each batch once
    assert leases.holder(call, 0) is None  # freed at the stall, not held by anyone after
    leases.close()


def test_a_shard_workers_slow_first_teacher_load_keeps_its_lease(shard_env, monkeypatch):
    """A worker's first load (a wheel download, a GGUF conversion on a busy host) outlasts
    the lease: the lease is renewed meanwhile, so the shard is not taken over and the load
    and work that follow are not thrown away."""
    monkeypatch.setenv("TAILOR_JOB_LEASE_SECONDS", "1")
    reset_caches()
    teacher = _SlowLocalTeacher(batch_s=0.0)
    other = Leases(get_settings())
    other.owner = "elsewhere:1:abc"
    call, folder = _new_pass()
    taken: list[bool] = []

    def slow_load(*_args: object) -> _SlowLocalTeacher:
        time.sleep(1.6)  # past the 1 s lease
        taken.append(other.claim(call, 0))
        return teacher

    monkeypatch.setattr(shards, "_teacher", slow_load)
    assert run_shard(JOB, call, 0, "local", Shard((PROMPT,), TEXTS).to_dict()) == "annotated"
    assert taken == [False] and read_result(folder, 0) is not None
    other.close()

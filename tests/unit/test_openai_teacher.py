"""The OpenAI-compatible teacher against a real HTTP server serving the tiny model."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.fixtures.tiny import corpus
from tests.integration.report import record_input
from tests.support import ROOT, free_port, wait_for
from worker.distill.config import EngineConfig, TaskConfig
from worker.distill.engine import DistillData, run
from worker.distill.prompts import default_prompts
from worker.distill.sources import resolve
from worker.distill.teachers import HFTeacher, OpenAITeacher
from worker.distill.teachers.openai_compat import option_scores

# Answer words whose beginnings are no other token of the tiny vocabulary, so matching by
# text (black box) and by token id (white box) must agree exactly.
TASK = {"labels": [{"name": "crisis", "verbalizer": "rescue"},
                   {"name": "calm", "verbalizer": "sunny"}]}


@pytest.fixture(scope="module")
def server(tiny_models) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtures.openai_server",
                             "--model", tiny_models[0], "--port", str(port)], cwd=ROOT)
    try:
        wait_for(lambda: httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                                    json={"model": "m", "prompt": "x"}).status_code == 200,
                 60, what="OpenAI-compatible test server")
        # The tiny vocabulary is small enough to ask for every token's log-probability.
        yield f"openai+http://127.0.0.1:{port}/v1?model=tiny&top_logprobs=400"
    finally:
        proc.terminate()
        proc.wait(10)


def test_option_scores_match_tokens_that_begin_one_option_only():
    top = {"cr": -0.5, " Crisis": -1.0, "no": -2.0, "c": -3.0}
    scores = option_scores(top, ("crisis", "calm"))
    assert scores[0] == pytest.approx(np.log(np.exp(-0.5) + np.exp(-1.0)))  # "c" is ambiguous
    assert scores[1] < -20  # calm was not among the returned tokens


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_scores_agree_with_the_white_box_teacher(server, tiny_models, tmp_path, api):
    prompt = default_prompts(TaskConfig(**TASK))[0]
    texts = corpus(12)
    black = OpenAITeacher(f"{server}&api={api}").score(prompt, texts)
    assert black.hidden is None and black.logprobs.shape == (12, 2)
    if api == "chat":  # same chat template, same model: the same next-token distribution
        white = HFTeacher(resolve(tiny_models[0], tmp_path), "cpu").score(prompt, texts)
        np.testing.assert_allclose(black.logprobs, white.logprobs, atol=1e-3)


def test_a_job_distils_from_an_openai_compatible_teacher(server, tiny_models, tmp_path):
    cfg = EngineConfig.from_dict({"task": TASK, "teacher": {"model": server},
                                  "student": {"model": tiny_models[1], "max_length": 32},
                                  "distillation": {"epochs": 1, "batch_size": 8}})
    res = run(cfg, DistillData(corpus(24), corpus(6), ["crisis", "calm"] * 3),
              workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert res.metrics["student"]["eval"]["n"] == 6
    skipped = [p for p in res.metrics["prompts"] if p.get("skipped")]
    assert {p["name"] for p in skipped} >= {"channel-about"}, "black boxes cannot score channels"
    assert "align" not in res.metrics["phases"], "no hidden states, no representation phase"


def test_the_teacher_scores_inside_a_running_event_loop_and_ticks_per_request(server,
                                                                             monkeypatch):
    """A notebook or an async caller of the engine already runs an event loop, where
    asyncio.run refuses to start; and answered requests tick (0 texts) at most every
    TICK_S, so a batch of hundreds of texts on a slow server is progress to the shard stall
    guard, while a fast server's pass does not pay a tick (a Redis round trip) per text."""
    from worker.distill.teachers import openai_compat

    prompt = default_prompts(TaskConfig(**TASK))[0]
    texts = corpus(5)
    fast: list[int] = []
    OpenAITeacher(server).score(prompt, texts, batch_size=16, on_batch=fast.append)
    assert fast == [5], "5 answers well within a second: the batch's own tick only"
    monkeypatch.setattr(openai_compat, "TICK_S", 0.0)
    ticks: list[int] = []

    async def caller() -> np.ndarray:
        return OpenAITeacher(server).score(prompt, texts, batch_size=16,
                                           on_batch=ticks.append).logprobs

    got = asyncio.run(caller())
    assert got.shape == (5, 2) and np.isfinite(got).all()
    np.testing.assert_allclose(got, OpenAITeacher(server).score(prompt, texts).logprobs)
    assert ticks == [0] * 5 + [5]


def test_a_tick_that_raises_stops_the_pass(server):
    """The shard holder's tick raises when its pass ended or its lease was lost: that
    exception, not a wrapper around it, ends the teacher's pass."""
    prompt = default_prompts(TaskConfig(**TASK))[0]

    class Stopped(Exception):
        pass

    def tick(_n: int) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        OpenAITeacher(server).score(prompt, corpus(20), batch_size=4, on_batch=tick)


def test_unreachable_server_fails_with_a_clear_code(tmp_path):
    from worker.distill.teachers import TeacherError

    teacher = OpenAITeacher(f"openai+http://127.0.0.1:{free_port()}/v1?model=x")
    with pytest.raises(TeacherError) as err:
        teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"])
    assert err.value.code == "teacher_unreachable"


def test_a_server_that_trickles_its_answer_meets_the_request_deadline(monkeypatch):
    """Every read gets a byte in time, so httpx's per-read timeout never fires; the
    request's overall deadline does, and the tries end as `teacher_unreachable`."""
    from worker.distill.teachers import TeacherError, openai_compat

    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[int] = []

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 100000\r\n\r\n")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b" ")
                except OSError:  # the client gave up and closed the connection
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        port = listener.getsockname()[1]
        teacher = OpenAITeacher(f"openai+http://127.0.0.1:{port}/v1?model=x")
        teacher.deadline_s = 0.4
        started = time.monotonic()
        with pytest.raises(TeacherError) as err:
            teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"])
        took = time.monotonic() - started
    finally:
        stop.set()
        server.join(5)
        listener.close()
    assert err.value.code == "teacher_unreachable"
    assert "no whole answer within 0.4 s" in err.value.message
    assert len(accepted) == openai_compat.RETRIES  # each try on a fresh connection
    assert 3 * 0.4 <= took < 5


def _mock_server(monkeypatch, handler) -> OpenAITeacher:
    """An OpenAITeacher whose requests go to `handler(request) -> httpx.Response`."""
    from worker.distill.teachers import openai_compat

    real = httpx.AsyncClient

    def client(**kwargs):
        return real(transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(openai_compat.httpx, "AsyncClient", client)
    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    return OpenAITeacher("openai+http://teacher.test/v1?model=x")


ANSWER = {"choices": [{"logprobs": {"content": [{"top_logprobs": [
    {"token": "rescue", "logprob": -0.1}, {"token": "sunny", "logprob": -2.5}]}]}}]}


def test_a_rate_limited_server_is_waited_for_as_its_retry_after_asks(monkeypatch):
    """A hosted API answers 429 with Retry-After while over its rate: three tries within
    the plain backoff (here 0 s) would all be refused and end the job."""
    first: list[float] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        first.append(time.monotonic())
        if time.monotonic() - first[0] < 0.5:
            return httpx.Response(429, headers={"retry-after": "1"}, json={"error": "slow"})
        return httpx.Response(200, json=ANSWER)

    teacher = _mock_server(monkeypatch, handler)
    got = teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"]).logprobs
    assert np.isfinite(got).all() and len(first) == 2
    assert first[1] - first[0] >= 0.9


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b'{"choices": [', b"[1]", b"{}",
                                  b'{"choices": []}', b'{"choices": [{"logprobs": null}]}',
                                  b'{"choices": [{"logprobs": {"content": [{}]}}]}'])
def test_an_unreadable_answer_is_the_servers_fault_by_name(monkeypatch, body):
    from worker.distill.teachers import TeacherError

    teacher = _mock_server(monkeypatch, lambda _r: httpx.Response(200, content=body))
    with pytest.raises(TeacherError) as err:
        teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"])
    assert err.value.code == "teacher_no_logprobs"
    record_input("teacher server answers that are not what the API promises",
                 ["OpenAI-compatible teacher (200 answers)"], [body.decode()[:60]],
                 ["TeacherError teacher_no_logprobs naming the server, never an internal "
                  "error", "NaN or non-numeric log-probabilities dropped, never a NaN score"])


def test_log_probabilities_that_are_no_numbers_never_become_a_nan_score(monkeypatch):
    body = (b'{"choices": [{"logprobs": {"content": [{"top_logprobs": ['
            b'{"token": "rescue", "logprob": NaN}, {"token": "sunny", "logprob": "-1"},'
            b'{"token": "sun", "logprob": -1.0}]}]}}]}')
    teacher = _mock_server(monkeypatch, lambda _r: httpx.Response(200, content=body))
    got = teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"]).logprobs
    assert np.isfinite(got).all()


@pytest.mark.parametrize("rescue", [-9999.0, -800.0, 1000.0, 0.5])
def test_a_log_probability_far_from_the_usual_range_is_a_finite_score(monkeypatch, rescue):
    """vLLM writes -9999.0 for a token it rules out: log(exp(-9999)) was a "math domain
    error" (and 1000.0 a "math range error") that ended the job as an internal error, or on a
    shard worker passed for a malformed message. Above 0 is no probability: it counts as 0."""
    body = {"choices": [{"logprobs": {"content": [{"top_logprobs": [
        {"token": "rescue", "logprob": rescue}, {"token": "res", "logprob": rescue - 1},
        {"token": "sunny", "logprob": -0.1}]}]}}]}
    teacher = _mock_server(monkeypatch, lambda _r: httpx.Response(200, json=body))
    got = teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"]).logprobs[0]
    assert np.isfinite(got).all()
    assert got[0] == pytest.approx(np.logaddexp(min(rescue, 0.0), min(rescue - 1, 0.0)))
    assert got[1] == pytest.approx(-0.1)
    record_input("teacher server answers that are not what the API promises",
                 ["OpenAI-compatible teacher (200 answers)"],
                 ["logprob -9999.0 (vLLM's ruled-out token), 1000.0, 0.5"],
                 ["a finite score from a stable log-sum-exp; a log-probability above 0 "
                  "counts as 0"])


@pytest.mark.parametrize("key", ["sk-secret123\n", " sk-secret123 "])
def test_a_key_read_from_a_file_with_its_newline_is_sent_without_it(monkeypatch, key):
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(200, json=ANSWER)

    monkeypatch.setenv("TAILOR_OPENAI_API_KEY", key)
    teacher = _mock_server(monkeypatch, handler)
    teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"])
    assert sent == ["Bearer sk-secret123"]


@pytest.mark.parametrize("key", ["sk-sécret123", "sk-sec\x01ret"])
def test_a_key_no_header_can_carry_is_named_without_being_shown(monkeypatch, key):
    from worker.distill.teachers import TeacherError

    monkeypatch.setenv("TAILOR_OPENAI_API_KEY", key)
    with pytest.raises(TeacherError) as err:
        _mock_server(monkeypatch, lambda _r: httpx.Response(200, json=ANSWER))
    assert "TAILOR_OPENAI_API_KEY" in err.value.message and "sec" not in err.value.message


@pytest.mark.parametrize("status,value", [(429, "1e308"), (429, "-5"), (429, "nan"),
                                          (429, "inf"), (429, "Wed, 21 Oct 2015 07:28:00 GMT"),
                                          (429, "soon"), (503, "9" * 400), (500, "30"),
                                          (502, "30"), (200, "30")])
def test_a_hostile_retry_after_never_waits_past_the_cap_nor_on_a_plain_failure(status, value):
    """A server may ask for years, the past, NaN or a date: the wait stays within
    [backoff, RETRY_AFTER_MAX_S]; only 429/503 mean "come back later" (a 500's or 502's
    Retry-After made every failing request wait 30 s instead of 0.5)."""
    from worker.distill.teachers import openai_compat

    wait = openai_compat.retry_wait_s(httpx.Response(status, headers={"retry-after": value}), 0)
    assert openai_compat.RETRY_BACKOFF_S <= wait <= openai_compat.RETRY_AFTER_MAX_S
    if status not in (429, 503):
        assert wait == openai_compat.RETRY_BACKOFF_S


def test_a_try_that_failed_in_transport_waits_its_own_backoff_not_the_last_retry_after(
        monkeypatch):
    """429 asking 2 s, then a dropped connection, then an answer: the second wait is the
    backoff (here 0 s); it was the first answer's 2 s again."""
    tries: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tries.append(time.monotonic())
        if len(tries) == 1:
            return httpx.Response(429, headers={"retry-after": "2"}, json={"error": "slow"})
        if len(tries) == 2:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(200, json=ANSWER)

    teacher = _mock_server(monkeypatch, handler)
    got = teacher.score(default_prompts(TaskConfig(**TASK))[0], ["a text"]).logprobs
    assert np.isfinite(got).all() and len(tries) == 3
    assert tries[1] - tries[0] >= 1.9
    assert tries[2] - tries[1] < 1.0


class _Interrupt(Exception):
    """Stands in for KeyboardInterrupt (which would end the pytest session itself)."""


def test_an_interrupt_inside_a_running_loop_cancels_the_pass_and_leaves_no_thread(
        monkeypatch):
    """A notebook's Ctrl-C reaches the thread waiting on the helper: it must cancel the
    requests, not wait for the whole pass (64 texts at 5 s, 8 at a time: 40 s, 64 requests)
    before the interrupt surfaces. (5 s a request: a busy machine may deliver the signal
    late, and it must still land within the first wave.)"""
    import os
    import signal

    from worker.distill.teachers import openai_compat

    asked: list[int] = []
    wave = threading.Event()

    async def handler(_request: httpx.Request) -> httpx.Response:
        asked.append(1)
        if len(asked) == openai_compat.PARALLEL_REQUESTS:
            wave.set()
        await asyncio.sleep(5)
        return httpx.Response(200, json=ANSWER)

    def interrupt(_signum: int, _frame: object) -> None:
        raise _Interrupt

    def send() -> None:
        wave.wait(30)
        os.kill(os.getpid(), signal.SIGUSR1)

    teacher = _mock_server(monkeypatch, handler)
    prompt = default_prompts(TaskConfig(**TASK))[0]

    async def notebook_cell() -> None:
        teacher.score(prompt, ["a text"] * 64, batch_size=64)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    sender = threading.Thread(target=send)
    try:
        sender.start()
        started = time.monotonic()
        with pytest.raises(_Interrupt):
            asyncio.run(notebook_cell())
        took = time.monotonic() - started
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert len(asked) == openai_compat.PARALLEL_REQUESTS  # the first wave only
    assert took < 8
    assert not [t for t in threading.enumerate() if t.name.startswith("openai-teacher")]

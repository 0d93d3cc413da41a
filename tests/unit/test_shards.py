"""Sharded teacher passes in one process (embedded mode): the same answers as one unsharded
pass, each (prompt, text) asked once, and a teacher server that keeps failing ends the pass
with `teacher_unavailable` naming it and what was done, the done part kept in the cache."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.latency_teacher import running
from tests.integration.report import record_input
from worker.distill.annotate import annotate
from worker.distill.cache import TeacherCache
from worker.distill.prompts import Prompt
from worker.distill.shards import InProcess, Shard, ShardedTeacher, server_failed
from worker.distill.teachers import TeacherError, openai_compat
from worker.distill.teachers.openai_compat import OpenAITeacher

PROMPT = Prompt("default", "Is this a crisis? Message: {text}", ("crisis", "none"))
TEXTS = [f"{'flood' if i % 2 else 'market'} report number {i}" for i in range(10)]


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/stats").json()


def test_sharded_pass_equals_one_pass_and_asks_each_text_once(tmp_path: Path):
    with running() as url:
        teacher = OpenAITeacher(f"openai+{url}/v1?model=fake")
        cache = TeacherCache(tmp_path / "teacher.sqlite")
        sharded = ShardedTeacher(teacher, InProcess(shard_texts=3), cache)
        whole = teacher.score(PROMPT, TEXTS, batch_size=4).logprobs
        before = _stats(url)["requests"]
        seen: list[int] = []
        got = annotate(sharded, PROMPT, TEXTS, cache=cache, batch_size=4, max_text_tokens=64,
                       on_texts=seen.append)
        assert np.allclose(got.logprobs, whole)
        assert got.logprobs[1].argmax() == 0 and got.logprobs[0].argmax() == 1  # flood/market
        assert _stats(url)["requests"] - before == len(TEXTS)  # 4 shards, each text once
        assert sum(seen) >= len(TEXTS) and sharded.done == len(TEXTS)
        again = annotate(sharded, PROMPT, TEXTS, cache=cache, batch_size=4, max_text_tokens=64)
        assert np.allclose(again.logprobs, whole)
        assert _stats(url)["requests"] - before == len(TEXTS)  # all from the cache
        # Re-prompts: one prompt per text, sharded the same way.
        each = [Prompt(f"p{i}", f"Example {i}. Message: {{text}}", ("crisis", "none"))
                for i in range(len(TEXTS))]
        out = sharded.score_each(each, TEXTS, batch_size=2)
        assert out.logprobs.shape == (len(TEXTS), 2) and out.hidden is None
        assert _stats(url)["requests"] - before == 2 * len(TEXTS)
        cache.close()


def test_teacher_that_keeps_failing_ends_with_teacher_unavailable(tmp_path: Path,
                                                                  monkeypatch):
    # The teacher's own retries back off for seconds; the verdict is the same without waiting.
    monkeypatch.setattr(openai_compat, "RETRY_BACKOFF_S", 0.0)
    with running(fail_after=6) as url:
        teacher = OpenAITeacher(f"openai+{url}/v1?model=fake")
        cache = TeacherCache(tmp_path / "teacher.sqlite")
        sharded = ShardedTeacher(teacher, InProcess(shard_texts=3), cache)
        with pytest.raises(TeacherError) as err:
            annotate(sharded, PROMPT, TEXTS, cache=cache, batch_size=3, max_text_tokens=64)
        assert err.value.code == "teacher_unavailable"
        assert f"openai:{url}/v1#fake" in err.value.message
        assert "6 texts were annotated" in err.value.message, err.value.message
        assert "503" in err.value.message
        kept = cache.get(teacher.id, PROMPT.id, TEXTS)
        assert sorted(kept) == list(range(6))  # the first two shards, kept for a retry
        cache.close()


def test_a_prompt_the_teacher_cannot_answer_keeps_its_own_code(tmp_path: Path):
    channel = Prompt("channel", "{text}", ("crisis", "none"), kind="channel",
                     prefixes=("Crisis:", "Calm:"))
    with running() as url:
        sharded = ShardedTeacher(OpenAITeacher(f"openai+{url}/v1?model=fake"),
                                 InProcess(shard_texts=3), None)
        with pytest.raises(TeacherError) as err:
            sharded.score(channel, TEXTS)
    assert err.value.code == "unsupported_prompt"  # adaptive judging skips such prompts


def test_only_a_failing_server_is_unavailable():
    assert server_failed("teacher_unreachable", "http://t/v1 did not answer: timed out")
    assert server_failed("teacher_error", "http://t/v1/chat/completions answered 503: busy")
    assert server_failed("teacher_error", "http://t/v1/chat/completions answered 429: slow")
    # A wrong key or model name: the user must change something, a retry will not help.
    assert not server_failed("teacher_error", "http://t/v1/chat/completions answered 401: x")
    assert not server_failed("teacher_no_logprobs", "http://t/v1 returned no log-probs")


def test_shard_round_trips_as_json_and_refuses_malformed():
    shard = Shard((PROMPT,), tuple(TEXTS[:2]), want_hidden=True, batch_size=8)
    assert Shard.from_dict(shard.to_dict()) == shard
    with pytest.raises(ValueError, match="malformed shard"):
        Shard.from_dict({**shard.to_dict(), "texts": [1, 2]})
    with pytest.raises(ValueError, match="malformed shard"):
        Shard.from_dict({**shard.to_dict(), "each": True})


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("batch_size", -5),
                                         ("batch_size", 10**6), ("max_text_tokens", 0),
                                         ("max_text_tokens", 10**15),
                                         ("max_text_tokens", 10**400),
                                         ("max_text_tokens", float("inf"))],
                         ids=["batch0", "batch-5", "batch1e6", "tokens0", "tokens1e15",
                              "tokens1e400", "tokens-inf"])
def test_a_message_no_job_could_send_is_malformed_not_an_endless_stall_bound(field, value):
    """max_text_tokens 10**15 made a stall bound of 10**15 s (a wedged holder kept its lease
    for ever) and 10**400 an OverflowError that crashed the shard task; batch_size 0 or less
    is no batch at all."""
    from worker.shards import stall_bound

    shard = Shard((PROMPT,), tuple(TEXTS), batch_size=512, max_text_tokens=4096)
    assert stall_bound(900.0, Shard.from_dict(shard.to_dict())) < 900.0 * 1000  # the most
    with pytest.raises(ValueError, match="malformed shard"):
        Shard.from_dict({**shard.to_dict(), field: value})
    record_input("hostile or garbled shard messages", ["tailor.annotate_shard (run_shard)"],
                 ["batch_size 0, -5 or 10**6", "max_text_tokens 0, 10**15, 10**400 or Infinity"],
                 ["'malformed shard message': no stall bound of 10**15 s, no OverflowError"])


def test_a_small_pass_is_cut_so_that_every_live_worker_gets_a_shard(monkeypatch):
    """The probe's 48- and 96-text passes in shards of 32 kept two of four workers idle
    (bench-scale: 3.09x on 4 workers before, 3.46x after)."""
    from app.core.config import Settings
    from worker.shards import MIN_SHARD_TEXTS, CeleryShards

    backend = CeleryShards("job_00000000000000ab", "x", Settings(annotation_shard_texts=32))
    for live, n, size in [(4, 48, 12), (4, 96, 24), (4, 3000, 32), (2, 48, 24),
                          (4, 20, MIN_SHARD_TEXTS), (1, 48, 32), (None, 48, 32)]:
        monkeypatch.setattr(backend, "_live_workers", lambda live=live: live)
        assert backend.shard_size(n) == size, (live, n)

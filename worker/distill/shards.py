"""Sharded teacher work (DESIGN.md 9): one teacher pass split into shards of texts.

Every pass the engine asks of the teacher (probe judging, full-corpus scoring, re-prompts)
goes through `ShardedTeacher`, which splits it into shards of at most `shard_texts` texts and
hands them to a `ShardBackend`. Each shard runs `work_shard`: `annotate` on its slice through
the content-addressed teacher cache, so a shard that is redone (its worker died) asks the
teacher only for what that worker had not yet stored, and no shard depends on the job.

Backends: `InProcess` (embedded mode, unit tests: the shards one after another in this
process) and `worker.shards.CeleryShards` (distributed: a Celery group on the `distill`
queue, the coordinating job task working unclaimed shards itself while it waits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from worker.distill.annotate import CACHE_CHUNK, annotate, annotate_each
from worker.distill.cache import TeacherCache
from worker.distill.config import TeacherConfig
from worker.distill.prompts import Prompt
from worker.distill.teachers import Teacher, TeacherError, TeacherScores

# The teacher *server* failed (after the teacher's own retries): unreachable, or answering
# 5xx / 429. These end the job as `teacher_unavailable`; a prompt it cannot answer or a 4xx
# (a wrong key or model name: retrying will not help) keeps its own code.
SERVER_ERROR = re.compile(r"answered (5\d\d|429)\b")
OnTexts = Callable[[int], None]
# The most a job may ask (TeacherConfig's bounds). A broker message is checked against them:
# a batch_size or max_text_tokens past what any job can send is no job's, and it would make
# the stall bound (worker.shards.stall_bound) overflow or never end.
MESSAGE_MAX = {f.name: int(f.metadata["le"]) for f in fields(TeacherConfig)
               if f.name in ("batch_size", "max_text_tokens")}


def server_failed(code: str, message: str) -> bool:
    """Whether a TeacherError says the teacher's server kept failing (see SERVER_ERROR)."""
    return code == "teacher_unreachable" or (code == "teacher_error"
                                             and SERVER_ERROR.search(message) is not None)


@dataclass(frozen=True)
class Shard:
    """One slice of a teacher pass.

    Args:
        prompts: one prompt for every text (`each` False), or one per text (`each` True:
            few-shot re-prompts, where every text carries its own demonstrations).
        texts: the texts of the slice, in pass order.
        each: see `prompts`.
        want_hidden: also return pooled hidden states (white-box teachers).
        batch_size, max_text_tokens, prefix_cache: the teacher settings of the pass.
    """

    prompts: tuple[Prompt, ...]
    texts: tuple[str, ...]
    each: bool = False
    want_hidden: bool = False
    batch_size: int = 16
    max_text_tokens: int = 256
    prefix_cache: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form for a broker message (never pickle)."""
        return {"prompts": [_prompt_dict(p) for p in self.prompts], "texts": list(self.texts),
                "each": self.each, "want_hidden": self.want_hidden,
                "batch_size": self.batch_size, "max_text_tokens": self.max_text_tokens,
                "prefix_cache": self.prefix_cache}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shard:
        """Inverse of `to_dict`; raises ValueError on anything malformed, batch_size and
        max_text_tokens outside 1..MESSAGE_MAX included."""
        try:
            prompts = tuple(Prompt(str(p["name"]), str(p["template"]),
                                   tuple(str(o) for o in p["options"]),
                                   None if p.get("label") is None else str(p["label"]),
                                   str(p.get("kind", "choice")),
                                   tuple(str(x) for x in p.get("prefixes", ())))
                            for p in data["prompts"])
            texts = tuple(data["texts"])
            shard = cls(prompts, texts, bool(data["each"]), bool(data["want_hidden"]),
                        int(data["batch_size"]), int(data["max_text_tokens"]),
                        bool(data["prefix_cache"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # Overflow: Infinity
            raise ValueError(f"malformed shard: {exc}") from None
        if not (1 <= shard.batch_size <= MESSAGE_MAX["batch_size"]
                and 1 <= shard.max_text_tokens <= MESSAGE_MAX["max_text_tokens"]):
            raise ValueError(f"malformed shard: batch_size {shard.batch_size} or "
                             f"max_text_tokens {shard.max_text_tokens} out of bounds")
        if not all(isinstance(t, str) for t in texts) or not prompts or (
                shard.each and len(prompts) != len(texts)):
            raise ValueError("malformed shard: texts and prompts do not match")
        return shard


def _prompt_dict(p: Prompt) -> dict[str, Any]:
    return {"name": p.name, "template": p.template, "options": list(p.options),
            "label": p.label, "kind": p.kind, "prefixes": list(p.prefixes)}


def work_shard(teacher: Teacher, shard: Shard, cache: TeacherCache | None,
               on_texts: OnTexts | None = None) -> TeacherScores:
    """Score one shard through the cache: what every worker runs for a shard.

    Returns logprobs [len(texts), K] and, when asked and the teacher has them, hidden
    [len(texts), H]. Raises TeacherError as the teacher does.
    """
    if shard.each:
        logprobs = annotate_each(teacher, shard.prompts, shard.texts, cache=cache,
                                 batch_size=shard.batch_size,
                                 max_text_tokens=shard.max_text_tokens, on_texts=on_texts)
        return TeacherScores(logprobs, None)
    return annotate(teacher, shard.prompts[0], shard.texts, cache=cache,
                    batch_size=shard.batch_size, max_text_tokens=shard.max_text_tokens,
                    prefix_cache=shard.prefix_cache, want_hidden=shard.want_hidden,
                    on_texts=on_texts)


class ShardFailed(Exception):
    """A shard's teacher failed; `done` texts of the pass were finished (and cached) first."""

    def __init__(self, code: str, message: str, done: int) -> None:
        super().__init__(message)
        self.code, self.message, self.done = code, message, done


class ShardBackend(Protocol):
    """Runs the shards of one pass and returns their scores in order.

    `shard_texts` is the most texts a shard holds; `shard_size(n)` how many a shard of an
    n-text pass holds (fewer where that keeps every worker busy). `run` calls `on_texts(n)`
    as texts are done (n may be 0: a tick while it waits, where the engine checks for
    cancellation) and raises ShardFailed when a shard's teacher fails; every finished shard
    is in `cache`.
    """

    shard_texts: int

    def shard_size(self, n_texts: int) -> int: ...

    def run(self, teacher: Teacher, shards: Sequence[Shard], cache: TeacherCache | None,
            on_texts: OnTexts) -> list[TeacherScores]: ...


class InProcess:
    """Embedded mode: the same shards, one after another, in this process."""

    def __init__(self, shard_texts: int = CACHE_CHUNK) -> None:
        self.shard_texts = shard_texts

    def shard_size(self, n_texts: int) -> int:
        """One process works every shard: `shard_texts` (the cache's chunk)."""
        return self.shard_texts

    def run(self, teacher: Teacher, shards: Sequence[Shard], cache: TeacherCache | None,
            on_texts: OnTexts) -> list[TeacherScores]:
        out, done = [], 0
        for shard in shards:
            try:
                out.append(work_shard(teacher, shard, cache, on_texts))
            except TeacherError as exc:
                raise ShardFailed(exc.code, exc.message, done) from exc
            done += len(shard.texts)
        return out


class ShardedTeacher:
    """A Teacher whose passes run as shards on a backend; everything else is the inner one's.

    Args:
        teacher: the loaded teacher (the coordinator scores shards with it too).
        backend: where the shards run.
        cache: the teacher cache finished shards are stored in.
    Raises (from score / score_each): TeacherError `teacher_unavailable` naming the teacher
        and the texts annotated before its server kept failing; other TeacherErrors as is.
    """

    # Every finished shard is in the cache already, so `annotate` hands over a whole pass
    # at once instead of cache-sized chunks (which would make each chunk a barrier).
    stores_shards = True

    def __init__(self, teacher: Teacher, backend: ShardBackend,
                 cache: TeacherCache | None) -> None:
        self.inner, self.backend, self.cache = teacher, backend, cache
        self.hidden_size, self.total_params = teacher.hidden_size, teacher.total_params
        self.precision = teacher.precision
        self.done = 0  # texts this attempt annotated through shards (all in the cache)

    @property
    def id(self) -> str:
        return self.inner.id

    def option_ids(self, options: Sequence[str]) -> list[list[int]]:
        return self.inner.option_ids(options)

    def latency_ms(self, prompt: Prompt, texts: Sequence[str], batch_size: int = 32) -> float:
        return self.inner.latency_ms(prompt, texts, batch_size)

    def score(self, prompt: Prompt, texts: Sequence[str], *, batch_size: int = 16,
              max_text_tokens: int = 256, prefix_cache: bool = True, want_hidden: bool = True,
              on_batch: OnTexts | None = None) -> TeacherScores:
        """Scores [N, K] (and hidden [N, H]) of `texts` under `prompt`, shard by shard."""
        n = self.backend.shard_size(len(texts))
        shards = [Shard((prompt,), tuple(texts[s:s + n]), False, want_hidden, batch_size,
                        max_text_tokens, prefix_cache) for s in range(0, len(texts), n)]
        return self._run(shards, on_batch, len(prompt.options), want_hidden)

    def score_each(self, prompts: Sequence[Prompt], texts: Sequence[str], *,
                   batch_size: int = 8, max_text_tokens: int = 256,
                   on_batch: OnTexts | None = None) -> TeacherScores:
        """Scores [N, K] of text i under prompts[i], shard by shard."""
        n = self.backend.shard_size(len(texts))
        shards = [Shard(tuple(prompts[s:s + n]), tuple(texts[s:s + n]), True, False,
                        batch_size, max_text_tokens) for s in range(0, len(texts), n)]
        k = len(prompts[0].options) if prompts else 0
        return self._run(shards, on_batch, k, False)

    def _run(self, shards: list[Shard], on_batch: OnTexts | None, k: int,
             want_hidden: bool) -> TeacherScores:
        if not shards:
            return TeacherScores(np.zeros((0, k), dtype=np.float32), None)
        tick = on_batch or (lambda _n: None)
        try:
            if len(shards) == 1:  # nothing to spread: no messages, no leases
                parts = [work_shard(self.inner, shards[0], self.cache, tick)]
            else:
                parts = self.backend.run(self.inner, shards, self.cache, tick)
        except TeacherError as exc:
            raise self._failed(ShardFailed(exc.code, exc.message, 0)) from exc
        except ShardFailed as exc:
            raise self._failed(exc) from exc
        self.done += sum(len(s.texts) for s in shards)
        logprobs = np.concatenate([p.logprobs for p in parts]).astype(np.float32)
        hidden = None
        if want_hidden and all(p.hidden is not None for p in parts):
            hidden = np.concatenate([p.hidden for p in parts if p.hidden is not None])
        return TeacherScores(logprobs, hidden)

    def _failed(self, exc: ShardFailed) -> TeacherError:
        if not server_failed(exc.code, exc.message):
            return TeacherError(exc.code, exc.message)
        done = self.done + exc.done
        return TeacherError(
            "teacher_unavailable",
            f"teacher {self.inner.id} kept failing ({exc.message}); {done} texts were "
            f"annotated before it did: they are kept in the teacher cache, so a retry "
            f"asks only for the rest")

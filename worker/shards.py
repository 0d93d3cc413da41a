"""Distributed annotation shards: a Celery group on the `distill` queue, leases in Redis.

Here: the coordinator (`CeleryShards`) and the shard task's body (`run_shard`); the leases
are in worker/shard_leases.py, the pass folder's result files in worker/shard_files.py.

The job task that runs the engine coordinates each teacher pass (`CeleryShards.run`):
1. it writes nothing but a folder for the pass in the job's workdir (the shared artifact
   store) and publishes one `tailor.annotate_shard` message per shard, as a Celery group;
2. any worker, the coordinator included, works a shard only after taking its lease in Redis
   (`SET NX PX`), renewed every third of TAILOR_JOB_LEASE_SECONDS while its teacher batches
   finish: after TAILOR_SHARD_STALL_SECONDS without one (a hung teacher call) the holder
   gives the lease up, the shard is redone elsewhere, and the holder, if it wakes, writes
   nothing; the scores go to a result file in the pass folder (temp file + rename) and to
   the worker's teacher cache;
3. the coordinator never blocks on Celery results: while shards are unfinished it takes any
   whose lease is free (never taken, or its worker died and the lease expired) and works it
   itself, and otherwise polls the result files, ticking progress (so a cancel is seen
   within a second). A single worker therefore runs a whole job alone, and no worker slot
   waits on another: the classic "task waits for its own subtasks" deadlock cannot happen;
4. when the pass ends (done, failed or cancelled) it sets the pass's stop key and removes
   the pass folder: running shards stop at their next batch and messages still queued end
   at once (the folder alone does it when Redis lost the key). A new pass first ends the
   passes an earlier attempt of the job left behind when its worker died.
Failures: a result file is checked (readable, one row per text) before it is used, and
redone otherwise; when Redis does not answer, the coordinator works shards unleased and a
worker goes by the folder; a holder re-takes a lease that vanished with a Redis restart.
When no other worker has beaten within /readyz's window (TAILOR_WORKER_FRESH_SECONDS), the
coordinator runs the shards in-process and publishes nothing.

Results travel through the artifact store, which DESIGN.md 2 already requires to be shared
by all workers, so workers on different machines see each other's shards; the coordinator
copies every finished shard into its own teacher cache. A shard that is redone asks the
teacher only for what its cache lacks (on one machine, the SQLite cache under
TAILOR_CACHE_DIR is shared by all workers, so that is only the chunk a dead worker had not
stored).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from celery import group
from kombu.exceptions import OperationalError
from safetensors import SafetensorError

from app.core.config import Settings, get_settings
from app.core.db import UNAVAILABLE, session_scope
from app.jobs import seam
from worker.celery_app import QUEUE, SHARD_TASK, get_celery
from worker.distill import teachers
from worker.distill.cache import TeacherCache
from worker.distill.shards import InProcess, OnTexts, Shard, ShardFailed, work_shard
from worker.distill.sources import ModelSourceError, check_uri
from worker.distill.teachers import Teacher, TeacherError, TeacherScores
from worker.shard_files import (
    error_path,
    listing,
    pass_dir,
    read_error,
    read_result,
    result_path,
    write_error,
    write_result,
)
from worker.shard_leases import (
    LeaseKeeper,
    Leases,
    ShardStopped,
    pass_over,
    release_quietly,
)

log = logging.getLogger(__name__)
POLL_S = 0.05  # the coordinator's look at result files while others work its shards
MIN_SHARD_TEXTS = 8  # a small pass is cut for every live worker, but not below this
JOB_ID = re.compile(r"^job_[0-9a-f]{16}$")
CALL_ID = re.compile(r"^[0-9a-f]{32}$")


def cache_identity(settings: Settings) -> str:
    """Which teacher cache file a worker writes: workers of one host with one
    TAILOR_CACHE_DIR share it, so a shard done by one is already in the others' cache."""
    return f"{socket.gethostname()}:{settings.cache}"


# The batch TAILOR_SHARD_STALL_SECONDS was measured on (app/core/config.py): 16 texts of up
# to 256 tokens between two ticks. A job may ask for 512 texts of 4096 tokens a batch, and
# a healthy CPU batch that size takes hundreds of times longer: judged by the plain bound it
# would be a stall on every try, redone and given up again forever.
STALL_REFERENCE_TOKENS = 16 * 256
CHARS_PER_TOKEN = 4  # a template's tokens, roughly (it is never truncated)


def stall_bound(stall_s: float, shard: Shard) -> float:
    """Seconds without a finished teacher batch after which the holder of `shard` gives its
    lease up: `stall_s` (TAILOR_SHARD_STALL_SECONDS) for a batch of the measured size
    (STALL_REFERENCE_TOKENS), longer in proportion to the tokens one batch of `shard` may
    carry (at most batch_size of its texts, each cut at max_text_tokens, plus the longest
    prompt template or prefix)."""
    longest = max((len(part) for p in shard.prompts for part in (p.template, *p.prefixes)),
                  default=0)
    texts = min(shard.batch_size, len(shard.texts))
    tokens = texts * (shard.max_text_tokens + longest // CHARS_PER_TOKEN)
    return stall_s * max(1.0, tokens / STALL_REFERENCE_TOKENS)


def work_leased(leases: Leases, teacher: Teacher, shard: Shard, cache: TeacherCache | None,
                call: str, index: int, folder: Path, stall_s: float,
                on_texts: OnTexts | None = None, *, coordinator: bool = False
                ) -> TeacherScores:
    """Work a shard whose lease we hold, renewing it while teacher batches finish.

    Raises ShardStopped when the pass ended (`pass_over`) or the lease was lost or given up
    after `stall_bound(stall_s, shard)` seconds without a finished batch (checked after
    every teacher batch, and once more when the shard is done or failed: a holder that lost
    its lease returns nothing and reports no failure); TeacherError as the teacher does.

    The job's `coordinator` stops only when the pass ended: a stall still frees the lease
    for another worker, but it finishes (or fails) what it started. Dropping a slow but
    healthy shard to retake it would redo the same slow batch forever, and the shard's
    message may be gone, so nobody else would take it. So a teacher call of the coordinator
    that never returns holds the job, cancel included, until its worker restarts: an
    OpenAI-compatible teacher's request deadline bounds it, a wedged local model does not
    (README, "Distributed setup")."""
    keeper = LeaseKeeper(leases, call, index, stall_bound(stall_s, shard))
    keeper.start()

    def lost() -> bool:
        return keeper.lost.is_set() and not coordinator

    def tick(n: int) -> None:
        if lost() or pass_over(leases, call, folder):
            raise ShardStopped(call)
        keeper.progress()
        if on_texts:
            on_texts(n)

    try:
        scores = work_shard(teacher, shard, cache, tick)
    except TeacherError as exc:
        keeper.finish()
        if lost():  # given up or taken: the shard's new holder reports it
            raise ShardStopped(call) from exc
        raise
    finally:
        keeper.finish()
    if lost():
        raise ShardStopped(call)
    return scores


class CeleryShards:
    """The distributed ShardBackend of one job (see the module docstring).

    Args:
        job_id: the job whose workdir holds the pass folders.
        teacher_uri: what shard workers load (checked against their source policy).
        settings: shard size, lease length, broker.
    """

    def __init__(self, job_id: str, teacher_uri: str, settings: Settings) -> None:
        self.job_id, self.teacher_uri = job_id, teacher_uri
        self.shard_texts = settings.annotation_shard_texts
        self.settings = settings

    def shard_size(self, n_texts: int) -> int:
        """Texts per shard of an n-text pass: TAILOR_ANNOTATION_SHARD_TEXTS, or fewer so that
        every live worker gets a shard (the probe's 48- and 96-text passes in shards of 32
        kept two of four workers idle), at least MIN_SHARD_TEXTS (a message per handful of
        texts would cost more than it spreads)."""
        live = self._live_workers()
        if live is None or live < 2:
            return self.shard_texts
        return max(MIN_SHARD_TEXTS, min(self.shard_texts, math.ceil(n_texts / live)))

    def run(self, teacher: Teacher, shards: Sequence[Shard], cache: TeacherCache | None,
            on_texts: OnTexts) -> list[TeacherScores]:
        leases = Leases(self.settings)
        try:
            end_stale_passes(leases, self.job_id)
            if not self._others_alive():  # nobody to share with: no messages, no leases
                return InProcess(self.shard_texts).run(teacher, shards, cache, on_texts)
            return self._fan_out(leases, teacher, shards, cache, on_texts)
        finally:
            leases.close()

    def _fan_out(self, leases: Leases, teacher: Teacher, shards: Sequence[Shard],
                 cache: TeacherCache | None, on_texts: OnTexts) -> list[TeacherScores]:
        """Publish the pass's shards as a group and collect them; the pass ends either way."""
        call = uuid.uuid4().hex
        folder = pass_dir(self.job_id, call)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            try:
                group(get_celery().signature(
                    SHARD_TASK, args=(self.job_id, call, i, self.teacher_uri,
                                      shard.to_dict(), teacher.precision),
                    queue=QUEUE) for i, shard in enumerate(shards)).apply_async()
            except (OperationalError, redis.RedisError):
                log.warning("job %s: shards not published (broker unreachable); this worker "
                            "runs the pass alone", self.job_id, exc_info=True)
                return InProcess(self.shard_texts).run(teacher, shards, cache, on_texts)
            return self._collect(leases, teacher, shards, cache, on_texts, call, folder)
        finally:
            end_pass(leases, call, folder)

    def _others_alive(self) -> bool:
        """Whether another worker beat recently (/readyz's window); True when unknown."""
        live = self._live_workers()
        return live is None or live > 1

    def _live_workers(self) -> int | None:
        """Workers that beat recently (/readyz's window), this one included; None when the
        database does not answer."""
        try:
            with session_scope() as db:
                return int(seam.liveness(db, fresh_s=self.settings.worker_fresh_seconds).live)
        except UNAVAILABLE:
            return None

    def _collect(self, leases: Leases, teacher: Teacher, shards: Sequence[Shard],
                 cache: TeacherCache | None, on_texts: OnTexts, call: str, folder: Path
                 ) -> list[TeacherScores]:
        results: dict[int, TeacherScores] = {}
        done = 0
        own_cache = cache_identity(self.settings)
        while len(results) < len(shards):
            pending = [i for i in range(len(shards)) if i not in results]
            arrived, names = False, listing(folder)
            for i in pending:
                found = (read_result(folder, i, shards[i])
                         if result_path(folder, i).name in names else None)
                if found is not None:
                    scores, stored_in = found
                    if stored_in != own_cache:  # another host's work: keep it here too
                        _store(cache, teacher.id, shards[i], scores)
                    results[i], arrived = scores, True
                    done += len(shards[i].texts)
                    on_texts(len(shards[i].texts))
                    continue
                error = read_error(folder, i) if error_path(folder, i).name in names else None
                if error is not None:
                    raise ShardFailed(*error, done)
            if arrived:
                continue
            taken = self._take_one(leases, teacher, shards, cache, on_texts, call, folder,
                                   [i for i in pending if i not in results], done)
            if taken is None:
                on_texts(0)  # a cancel or a lost job lease stops the wait here
                time.sleep(POLL_S)
                continue
            index, scores = taken
            results[index] = scores
            done += len(shards[index].texts)
        return [results[i] for i in range(len(shards))]

    def _take_one(self, leases: Leases, teacher: Teacher, shards: Sequence[Shard],
                  cache: TeacherCache | None, on_texts: OnTexts, call: str, folder: Path,
                  pending: list[int], done: int) -> tuple[int, TeacherScores] | None:
        """Work the first pending shard whose lease is free; None when all are held."""
        for i in pending:
            try:
                claimed = leases.claim(call, i)
            except redis.RedisError:
                # Redis restarting: work it unleased. Another worker may do it too, which
                # costs teacher time but never a wrong answer (same scores, same cache keys).
                log.warning("Redis unreachable: the coordinator works shard %d unleased", i)
                try:
                    return i, work_shard(teacher, shards[i], cache, on_texts)
                except TeacherError as exc:
                    raise ShardFailed(exc.code, exc.message, done) from exc
            if not claimed:
                continue
            try:
                if result_path(folder, i).exists():  # finished as we looked
                    return None
                try:
                    scores = work_leased(leases, teacher, shards[i], cache, call, i, folder,
                                         self.settings.shard_stall_seconds, on_texts,
                                         coordinator=True)
                except TeacherError as exc:
                    # Also after a stall: nobody else would learn it (the shard's message is
                    # gone), and redoing it here could loop forever.
                    raise ShardFailed(exc.code, exc.message, done) from exc
                except ShardStopped:
                    return None  # the pass ended
                log.info("annotation shard %d/%d (%d texts) done by the coordinator %s",
                         i + 1, len(shards), len(shards[i].texts), leases.owner)
                return i, scores
            finally:
                release_quietly(leases, call, i)
        return None


def end_pass(leases: Leases, call: str, folder: Path) -> None:
    """Stop a pass's shards (stop key) and remove its folder (which stops them too when
    Redis does not answer: see `pass_over`)."""
    try:
        leases.stop(call)
    except redis.RedisError:
        log.warning("pass %s: stop key not set (Redis unreachable)", call)
    shutil.rmtree(folder, ignore_errors=True)


def end_stale_passes(leases: Leases, job_id: str) -> None:
    """End the passes an earlier attempt of this job left behind (its worker died
    mid-pass): their queued and running shards stop instead of working for nobody. Only the
    job's lease holder coordinates, and its own passes run one at a time, so every pass
    folder found before a new pass starts is stale."""
    root = seam.job_workdir(job_id) / "shards"
    for stale in root.iterdir() if root.is_dir() else ():
        if stale.is_dir() and CALL_ID.match(stale.name):
            log.info("job %s: ending pass %s of an earlier attempt", job_id, stale.name)
            end_pass(leases, stale.name, stale)


def _store(cache: TeacherCache | None, teacher_id: str, shard: Shard,
           scores: TeacherScores) -> None:
    if cache is None:
        return
    if shard.each:
        for row, (prompt, text) in enumerate(zip(shard.prompts, shard.texts, strict=True)):
            cache.put(teacher_id, prompt.id, [text], scores.logprobs[row:row + 1], None)
    else:
        cache.put(teacher_id, shard.prompts[0].id, shard.texts, scores.logprobs, scores.hidden)


# ---------------------------------------------------------------- the shard task's body
# one teacher per worker process, by (URI, precision), kept between shards
_loaded: dict[tuple[str, str], Teacher] = {}
_leases_open: list[Leases] = []  # this process's Redis connection, opened at its first shard
_cache_open: list[TeacherCache] = []  # and its teacher cache


def _leases(settings: Settings) -> Leases:
    if not _leases_open:
        _leases_open.append(Leases(settings))
    return _leases_open[0]


def _cache(settings: Settings) -> TeacherCache:
    if not _cache_open:
        _cache_open.append(TeacherCache(settings.cache / "teacher.sqlite"))
    return _cache_open[0]


def _teacher(uri: str, precision: str, settings: Settings) -> Teacher:
    """The job's teacher in the coordinator's precision, resolved under this worker's source
    policy, read from the model cache (a GGUF converted once) and kept loaded."""
    if (uri, precision) not in _loaded:
        _loaded.clear()  # one at a time: a local teacher can take gigabytes
        check_uri(uri)
        settings.source_policy.check(uri)
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        source = teachers.resolve_teacher(uri, settings.cache / "models",
                                          policy=settings.source_policy,
                                          index_url=settings.pypi_index_url)
        _loaded[uri, precision] = teachers.load_teacher(
            source, teachers.pick_device(settings.device), precision=precision,
            cache_dir=settings.cache / "models")
    return _loaded[uri, precision]


def _load_leased(leases: Leases, call: str, index: int, uri: str, precision: str,
                 settings: Settings) -> Teacher:
    """`_teacher`, renewing the shard's lease meanwhile: a worker's first load (a wheel
    download, a GGUF conversion on a busy host) can outlast the lease, and the shard would
    be taken over and this worker's work on it thrown away. A load past the stall bound
    gives the lease up like a stalled batch. Raises ShardStopped when the lease was lost."""
    keeper = LeaseKeeper(leases, call, index, settings.shard_stall_seconds)
    keeper.start()
    try:
        teacher = _teacher(uri, precision, settings)
    finally:
        held = keeper.finish()
    if not held:
        raise ShardStopped(call)
    return teacher


def run_shard(job_id: str, call: str, index: int, teacher_uri: str,
              payload: dict[str, Any], precision: str = "float32") -> str:
    """Work one shard message if its pass still wants it; return what happened (for logs).

    A message for a finished, stopped or leased shard ends at once; a teacher failure is
    written for the coordinator to report (it ends the job as `teacher_unavailable`)."""
    if not (isinstance(job_id, str) and isinstance(call, str) and JOB_ID.match(job_id)
            and CALL_ID.match(call) and type(index) is int and index >= 0
            and isinstance(teacher_uri, str) and isinstance(payload, dict)
            and isinstance(precision, str) and precision in ("float32", "bfloat16")):
        return "malformed shard message"
    settings = get_settings()
    folder = pass_dir(job_id, call)
    leases = _leases(settings)
    if not folder.is_dir() or leases.stopped(call):
        return "pass over"
    if result_path(folder, index).exists() or not leases.claim(call, index):
        return "done or taken"
    try:
        if result_path(folder, index).exists():
            return "done"
        shard = Shard.from_dict(payload)
        started = time.perf_counter()
        teacher = _load_leased(leases, call, index, teacher_uri, precision, settings)
        scores = work_leased(leases, teacher, shard, _cache(settings), call, index, folder,
                             settings.shard_stall_seconds)
        try:
            write_result(folder, index, scores, cache_identity(settings))
        except (OSError, SafetensorError):
            if folder.is_dir():
                raise
            return "pass over"  # it ended (done elsewhere) while this shard's last batch ran
        log.info("annotation shard %d (%d texts) of %s done by %s in %.2f s", index + 1,
                 len(shard.texts), job_id, leases.owner, time.perf_counter() - started)
        return "annotated"
    except ShardStopped:
        return "stopped"
    except (TeacherError, ModelSourceError) as exc:
        write_error(folder, index, exc.code, exc.message)
        return f"failed: {exc.code}"
    except ValueError as exc:  # a malformed payload: the coordinator redoes the shard
        log.warning("shard %d of %s: %s", index, job_id, exc)
        return "malformed shard message"
    finally:
        release_quietly(leases, call, index)

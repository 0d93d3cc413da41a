"""Shard leases and pass stop flags in the broker's Redis (see worker/shards.py).

A worker works a shard only while it holds the shard's lease (`SET NX PX`, renewed by a
`LeaseKeeper` every third of TAILOR_JOB_LEASE_SECONDS while the shard makes progress: see
`LeaseKeeper` for TAILOR_SHARD_STALL_SECONDS); a pass is over once its stop key is
set or its folder is gone (`pass_over`). Keys: `tailor:shard:<call>:<index>` (the lease) and
`tailor:shards:<call>:stop`, where `call` is a fresh uuid4 per pass, so neither another job
nor another attempt of this one shares them; every key expires on its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import redis

from app.core.config import Settings
from worker.celery_app import VISIBILITY_TIMEOUT_S

log = logging.getLogger(__name__)
# Compare-and-act on a lease: only its holder renews or frees it. A holder re-takes a lease
# that vanished (Redis restarted without its keys): nobody else can hold it then, and the
# shard is not dropped by every worker at once.
RENEW = "local v = redis.call('get', KEYS[1]) " \
        "if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end " \
        "if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end " \
        "return 0"
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
          "return redis.call('del', KEYS[1]) else return 0 end"


def owner_id() -> str:
    """This process as a lease holder: host, pid (a Celery pool child's own) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


_NONCE = uuid.uuid4().hex[:6]


class ShardStopped(Exception):
    """The pass ended (done elsewhere, failed or cancelled) or this worker lost the lease."""


class Leases:
    """Shard leases and stop flags of annotation passes, in the broker's Redis."""

    def __init__(self, settings: Settings) -> None:
        self.redis = redis.Redis.from_url(
            settings.broker, socket_timeout=settings.broker_timeout_seconds,
            socket_connect_timeout=settings.broker_timeout_seconds)
        self.lease_ms = settings.job_lease_seconds * 1000
        self.owner = owner_id()
        self._renew = self.redis.register_script(RENEW)
        self._release = self.redis.register_script(RELEASE)

    @staticmethod
    def _key(call: str, index: int) -> str:
        return f"tailor:shard:{call}:{index}"

    def claim(self, call: str, index: int) -> bool:
        return bool(self.redis.set(self._key(call, index), self.owner, nx=True,
                                   px=self.lease_ms))

    def holder(self, call: str, index: int) -> str | None:
        value = self.redis.get(self._key(call, index))
        return value.decode() if isinstance(value, bytes) else None

    def renew(self, call: str, index: int) -> bool:
        return bool(self._renew(keys=[self._key(call, index)],
                                args=[self.owner, self.lease_ms]))

    def release(self, call: str, index: int) -> None:
        self._release(keys=[self._key(call, index)], args=[self.owner])

    def stop(self, call: str) -> None:
        """Mark the pass over; kept as long as Redis may still redeliver its messages."""
        self.redis.set(f"tailor:shards:{call}:stop", "1", ex=VISIBILITY_TIMEOUT_S + 3600)

    def stopped(self, call: str) -> bool:
        return bool(self.redis.exists(f"tailor:shards:{call}:stop"))

    def close(self) -> None:
        self.redis.close()


class LeaseKeeper(threading.Thread):
    """Holds one shard lease while its holder makes progress.

    Renews the lease every third of its length; sets `lost` when another worker has it (ours
    expired: this worker was too slow or paused). The holder calls `progress()` after every
    teacher batch; when none came for `stall_s` seconds (a teacher call that never returns:
    a server trickling bytes, a wedged model) the keeper stops renewing, frees the lease
    so that another worker or the job's coordinator redoes the shard, and sets `stalled` and
    `lost`: the holder, if it ever wakes, discards its work. A lease renewed only on progress
    is the lease of Gray and Cheriton (1989, "Leases: an efficient fault-tolerant mechanism
    for distributed file cache consistency") with a progress deadline, as Kubernetes'
    `progressDeadlineSeconds` judges a rollout by its progress, not by its process living.

    Args:
        leases: the Redis leases (lease length, holder id).
        call, index: the pass and the shard.
        stall_s: seconds without progress after which the lease is given up.
    """

    def __init__(self, leases: Leases, call: str, index: int, stall_s: float) -> None:
        super().__init__(daemon=True, name=f"shard-lease-{index}")
        self.leases, self.call, self.index, self.stall_s = leases, call, index, stall_s
        self.stopped, self.lost, self.stalled = (threading.Event(), threading.Event(),
                                                 threading.Event())
        self._last = time.monotonic()

    def progress(self) -> None:
        """A teacher batch of the shard finished."""
        self._last = time.monotonic()

    def run(self) -> None:
        # Renew every third of the lease; look for a stall at least four times per bound.
        period = min(self.leases.lease_ms / 3000, self.stall_s / 4)
        while not self.stopped.wait(period):
            idle = time.monotonic() - self._last
            if idle > self.stall_s:
                log.warning("shard %s/%d: no teacher batch for %.0f s (bound %s s): lease "
                            "given up, the shard is redone elsewhere", self.call, self.index,
                            idle, self.stall_s)
                self.stalled.set()
                self.lost.set()
                release_quietly(self.leases, self.call, self.index)
                return
            try:
                if not self.leases.renew(self.call, self.index):
                    self.lost.set()
                    return
            except redis.RedisError:  # a blip: the lease outlives a few missed renewals
                log.warning("shard lease renewal failed", exc_info=True)

    def finish(self) -> bool:
        """Stop renewing and wait for the keeper; True when the lease is still ours (it was
        neither lost nor given up), so the holder may publish its result."""
        self.stopped.set()
        self.join()
        return not self.lost.is_set()


def pass_over(leases: Leases, call: str, folder: Path) -> bool:
    """Whether the pass ended: its stop key is set, or its folder is gone (the coordinator
    removes it when the pass ends, so this holds even when Redis lost the stop key). A Redis
    that does not answer says nothing: the folder decides."""
    if not folder.is_dir():
        return True
    try:
        return leases.stopped(call)
    except redis.RedisError:
        log.warning("shard pass %s: Redis unreachable, going by its folder", call)
        return False


def release_quietly(leases: Leases, call: str, index: int) -> None:
    """Free a lease; when Redis does not answer, it expires on its own."""
    try:
        leases.release(call, index)
    except redis.RedisError:
        log.warning("shard lease %s/%d not released (Redis unreachable)", call, index)

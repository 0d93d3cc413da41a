"""Shard leases and pass stop flags in the broker's Redis (see worker/shards.py).

A worker works a shard only while it holds the shard's lease (`SET NX PX`, renewed by a
`LeaseKeeper` every third of TAILOR_JOB_LEASE_SECONDS); a pass is over once its stop key is
set or its folder is gone (`pass_over`). Keys: `tailor:shard:<call>:<index>` (the lease) and
`tailor:shards:<call>:stop`, where `call` is a fresh uuid4 per pass, so neither another job
nor another attempt of this one shares them; every key expires on its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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
    """Renews one shard lease every third of its length until stopped; sets `lost` when
    another worker has it (ours expired: this worker was too slow or paused)."""

    def __init__(self, leases: Leases, call: str, index: int) -> None:
        super().__init__(daemon=True, name=f"shard-lease-{index}")
        self.leases, self.call, self.index = leases, call, index
        self.stopped, self.lost = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.leases.lease_ms / 3000):
            try:
                if not self.leases.renew(self.call, self.index):
                    self.lost.set()
                    return
            except redis.RedisError:  # a blip: the lease outlives a few missed renewals
                log.warning("shard lease renewal failed", exc_info=True)


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

"""Which jobs have a wake-up message waiting in the broker right now (read-only peek).

Kombu has no portable "peek", so this reads the two transports Tailor uses: Redis (its
queue lists, plus messages handed to a worker within the last `recent_s` seconds, which that
worker is about to claim) and the filesystem transport's queue folder. The sweeper only uses
it to avoid re-waking jobs that are already on their way to a worker.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import redis

from app.core.config import Settings
from worker.celery_app import TASK_NAME

log = logging.getLogger(__name__)
PRIORITY_SEP = "\x06\x16"  # kombu's Redis key separator for priority sub-queues
PRIORITY_STEPS = (0, 3, 6, 9)
PEEK_LIMIT = 10_000  # beyond this many waiting messages, say "unknown" rather than read them


def waiting_job_ids(settings: Settings, queue: str, recent_s: float) -> set[str] | None:
    """Job ids with a message waiting in `queue`, or None when the broker cannot be read."""
    try:
        if settings.broker.startswith("filesystem://"):
            return _job_ids(_folder_messages(settings, queue))
        if settings.broker.startswith(("redis://", "rediss://")):
            return _job_ids(_redis_messages(settings, queue, recent_s))
    except (OSError, redis.RedisError, ValueError) as exc:
        log.info("cannot read the broker queue (%s); sweeping by age alone", exc)
    return None


def _redis_messages(settings: Settings, queue: str, recent_s: float) -> list[Any]:
    client = redis.Redis.from_url(settings.broker, socket_timeout=settings.broker_timeout_seconds,
                                  socket_connect_timeout=settings.broker_timeout_seconds)
    try:
        keys = [queue if pri == 0 else f"{queue}{PRIORITY_SEP}{pri}" for pri in PRIORITY_STEPS]
        if sum(int(client.llen(k)) for k in keys) > PEEK_LIMIT:
            raise ValueError("too many waiting messages to inspect")
        messages: list[Any] = [m for k in keys for m in client.lrange(k, 0, -1)]
        # kombu's own bookkeeping of delivered, unacknowledged messages: tag -> delivery time.
        # Without withscores the reply is a list of members; redis-py types every reply shape.
        tags = cast(list[bytes], client.zrangebyscore("unacked_index", time.time() - recent_s,
                                                      "+inf", start=0, num=PEEK_LIMIT))
        for entry in client.hmget("unacked", tags) if tags else []:
            if entry:
                messages.append(json.loads(entry)[0])
        return messages
    finally:
        client.close()


def _folder_messages(settings: Settings, queue: str) -> list[bytes]:
    folder = settings.broker_dir / "queue"
    if not folder.is_dir():  # nothing was ever published
        return []
    names = [n for n in sorted(p.name for p in folder.iterdir()) if n.endswith(f".{queue}.msg")]
    if len(names) > PEEK_LIMIT:
        raise ValueError("too many waiting messages to inspect")
    out = []
    for name in names:
        try:
            out.append((folder / name).read_bytes())
        except FileNotFoundError:  # taken by a worker since the listing
            continue
    return out


def _job_ids(raw_messages: Iterable[Any]) -> set[str]:
    ids = set()
    for raw in raw_messages:
        job_id = _job_id(raw)
        if job_id:
            ids.add(job_id)
    return ids


def _job_id(raw: bytes | dict[str, Any]) -> str | None:
    """The first task argument of a Celery protocol-2 message (a JSON body, maybe base64)
    waking a job; None for other tasks on the queue (annotation shards name their job too,
    but a waiting shard must not keep the sweeper from re-waking a stranded job)."""
    try:
        message: dict[str, Any] = raw if isinstance(raw, dict) else json.loads(raw)
        if message.get("headers", {}).get("task", TASK_NAME) != TASK_NAME:
            return None
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None

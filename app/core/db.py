"""Database engine and session scope. One owner per session: whoever opens it commits it.

Services only add, change and flush; the session scope (`session_scope`, or the request's
`SessionDep`, which commits before the response is sent) commits. Work outside the database
that must follow a commit (waking a worker, removing files, clearing a cache) is handed to
`after_commit` and runs only once the transaction is durable.

Row locks that work in both databases: `lock_row` (and `write_lock` underneath it) give a
read-check-write the same guarantee on SQLite that `SELECT ... FOR UPDATE` gives on
PostgreSQL (on SQLite, SQLAlchemy's `with_for_update` is silently a no-op).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import get_settings

log = logging.getLogger(__name__)
SQLITE_BUSY_TIMEOUT_MS = 30_000  # API and worker write to one file; wait rather than fail.
Row = TypeVar("Row")
# What an unreachable or restarting database raises. Other DBAPI errors (bad data, broken
# constraints) are bugs, not outages, and must not be reported as "retry later".
UNAVAILABLE = (OperationalError, InterfaceError)
AFTER_COMMIT = "tailor.after_commit"  # key in Session.info: callables waiting for the commit


def make_engine(url: str) -> Engine:
    """Create an engine for `url` with the pragmas and pool settings Tailor relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # pool_pre_ping lets the API recover by itself after a database restart.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                         connect_args={"connect_timeout": 5})


@lru_cache
def get_engine() -> Engine:
    """Return the process-wide engine for the configured database."""
    return make_engine(get_settings().db_url)


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """Open a session, commit on success, roll back on error, always close."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def after_commit(db: Session, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call `fn(*args, **kwargs)` once `db` commits; drop the call if `db` rolls back.

    Calls run in the order given, after the commit, so each sees (and may act on) what was
    committed: a worker woken for a job finds its row. The commit cannot be undone by then,
    so a call that raises is logged, never raised into whoever committed.
    """
    db.info.setdefault(AFTER_COMMIT, []).append(partial(fn, *args, **kwargs))


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for call in session.info.pop(AFTER_COMMIT, []):
        try:
            call()
        except Exception:
            log.exception("after-commit call %r failed", call)


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(AFTER_COMMIT, None)


def write_lock(db: Session) -> None:
    """On SQLite, take the database write lock now, for the rest of the session's transaction.

    pysqlite (in its default, legacy transaction mode) runs SELECTs outside any transaction
    and opens one lazily at the first INSERT/UPDATE/DELETE, so a read-check-write sees no
    lock: two processes both read "latest version 3" and both write 4. `BEGIN IMMEDIATE`
    takes the write lock before anything is read; a second writer waits for it (busy
    timeout, SQLITE_BUSY_TIMEOUT_MS) instead of failing. A connection already in a
    transaction holds the write lock already (pysqlite only opens one at a write). On
    PostgreSQL this does nothing: lock rows there with `FOR UPDATE` (see `lock_row`).
    """
    conn = db.connection()
    if conn.dialect.name != "sqlite":
        return
    raw: Any = conn.connection.driver_connection
    if not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def lock_row(db: Session, model: type[Row], key: Any) -> Row | None:
    """Fetch the row with primary key `key`, fresh and locked until the session commits.

    PostgreSQL: `SELECT ... FOR UPDATE` on that row. SQLite: the database write lock (the
    only lock it has) taken before the read. Either way a concurrent caller of `lock_row`
    on the same row waits, then reads what this transaction committed. None if absent.
    """
    write_lock(db)
    return db.get(model, key, with_for_update=True, populate_existing=True)


def ping() -> None:
    """Raise if the database cannot answer a trivial query."""
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def reset_caches() -> None:
    """Forget the engine and settings (tests switch databases between runs)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _session_factory.cache_clear()
    get_settings.cache_clear()
    from worker.celery_app import get_celery  # the broker URL is a setting too

    get_celery.cache_clear()

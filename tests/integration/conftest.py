"""Real services for integration tests: a fresh PostgreSQL database and Redis per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import service_url
from tests.integration.faults import FAST, JobLog
from tests.support import Stack, embedded_home, make_env

pytestmark = pytest.mark.integration


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server; dropped afterwards."""
    admin_url = service_url("TAILOR_TEST_DATABASE_URL")
    name = f"tailor_{uuid.uuid4().hex[:10]}"
    # pre-ping: fault tests restart the server, which kills pooled connections
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server; dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    url = service_url("TAILOR_TEST_REDIS_URL")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def distributed(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    """Env for an API and worker on PostgreSQL + Redis (processes started by the test)."""
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home, make_env(home, TAILOR_DATABASE_URL=pg_url, TAILOR_BROKER_URL=redis_url))
    yield stack
    stack.discard()


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home, make_env(home))
    yield stack
    stack.discard()


@pytest.fixture(scope="module")
def shared_fault_api(tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[Stack, JobLog]]:
    """One API process on its own database for a module of fault tests (starting it is the
    slow part); short leases and fast sweeps for the workers the tests start."""
    with fresh_database() as url:
        home = tmp_path_factory.mktemp("faults") / "home"
        home.mkdir()
        broker = service_url("TAILOR_TEST_REDIS_URL")
        stack = Stack(home, make_env(home, TAILOR_DATABASE_URL=url, TAILOR_BROKER_URL=broker,
                                     **FAST))
        stack.start_api()
        log = JobLog(url)
        yield stack, log
        log.close()
        stack.discard()


@pytest.fixture
def fault_stack(shared_fault_api: tuple[Stack, JobLog], redis_url: str
                ) -> Iterator[tuple[Stack, JobLog]]:
    """The module's API with an empty broker; the workers a test starts are stopped after it."""
    stack, log = shared_fault_api
    started = len(stack.procs)
    yield stack, log
    mine = Stack(stack.home, stack.env, procs=stack.procs[started:])
    mine.stop()
    del stack.procs[started:]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An embedded home whose database is SQLite, then PostgreSQL (through the migrations):
    service-level tests run on both."""
    if request.param == "sqlite":
        with embedded_home(tmp_path, monkeypatch):
            yield "sqlite"
        return
    from app.core.db import reset_caches
    from app.core.migrate import upgrade

    pg_url = request.getfixturevalue("pg_url")
    with embedded_home(tmp_path, monkeypatch, revision="base"):
        monkeypatch.setenv("TAILOR_DATABASE_URL", pg_url)
        reset_caches()
        upgrade(pg_url)
        yield "postgresql"

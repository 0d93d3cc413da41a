"""The registry under concurrency on real PostgreSQL: version numbers, aliases vs archiving."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine
from app.core.errors import Conflict
from app.core.migrate import upgrade
from app.models import ModelAlias, ModelVersion, RegisteredModel
from app.registry.service import register_version, set_alias, set_archived
from tests.fixtures.versions import run_result

pytestmark = pytest.mark.integration
THREADS, PER_THREAD = 12, 4
NAMES = ("crisis", "floods")


def _register(db: Session, root: Path, name: str, job_id: str) -> int:
    result = run_result(root / "jobs" / job_id / "student", {}, "/base", "b" * 64,
                        ["crisis", "calm"], False, job_id)
    version = register_version(db=db, job_id=job_id, name=name, result=result,
                               artifacts_root=root)
    db.commit()
    return version


def _run_together(n: int, target) -> list[BaseException]:
    barrier, errors = threading.Barrier(n), []

    def run(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:  # collected and asserted on by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_parallel_registrations_get_unique_increasing_numbers(pg_url, tmp_path):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    seen: dict[tuple[int, str], list[int]] = defaultdict(list)

    def register_many(t: int) -> None:
        for i in range(PER_THREAD):  # both names start unregistered: creation races too
            name = NAMES[(t + i) % len(NAMES)]
            with sessions() as db:
                seen[(t, name)].append(_register(db, tmp_path, name, f"job_{t}_{i}"))

    assert _run_together(THREADS, register_many) == []
    for name in NAMES:
        numbers = sorted(v for (_, n), vs in seen.items() if n == name for v in vs)
        assert numbers == list(range(1, THREADS * PER_THREAD // len(NAMES) + 1))
    for versions in seen.values():  # each writer sees its own versions increase
        assert versions == sorted(versions)
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(ModelVersion)) == THREADS * PER_THREAD
        latest = {r.name: r.latest_version for r in db.execute(
            select(RegisteredModel.name, RegisteredModel.latest_version))}
        assert latest == {n: THREADS * PER_THREAD // len(NAMES) for n in NAMES}
        # a retried job that crashed after registering gets its version back, not a new one
        assert _register(db, tmp_path, "crisis", "job_0_0") == seen[(0, "crisis")][0]
    engine.dispose()


def test_an_alias_never_ends_on_an_archived_version(pg_url, tmp_path):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as db:
        for i in range(3):
            _register(db, tmp_path, "crisis", f"job_{i}")
    refused = []

    def race(i: int) -> None:  # archive v2 while others create and move `production`
        with sessions() as db:
            try:
                if i % 4:
                    set_alias(db=db, name="crisis", alias="production", version=i % 4)
                else:
                    set_archived(db=db, name="crisis", version=2, archived=True)
                db.commit()
            except Conflict as exc:
                refused.append(exc.code)

    assert _run_together(16, race) == []  # no lost update, no duplicate-key crash
    with sessions() as db:
        alias = db.get(ModelAlias, ("crisis", "production"))
        archived = db.scalar(select(ModelVersion.archived).where(ModelVersion.version == 2))
    assert not (alias is not None and alias.version == 2 and archived)
    assert set(refused) <= {"version_archived", "version_aliased"}
    engine.dispose()

"""Deleting a dataset while jobs are submitted on it, at once, on SQLite (embedded) and on
real PostgreSQL: a dataset being deleted is never picked by a new job. Either the delete
wins (every submission that came after it is refused with 422 `dataset_not_found`) or a
submission wins (the delete answers 409 `dataset_in_use` and the dataset stays)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.core.errors import Conflict, Invalid
from app.core.security import LOCAL
from app.datasets.parsing import Row
from app.datasets.service import create_dataset, delete_dataset
from app.jobs.schemas import JobCreate
from app.jobs.service import submit_job
from app.models import Dataset, Job
from tests.fixtures.tiny import corpus
from tests.support import job_body

pytestmark = pytest.mark.integration
ROUNDS, SUBMITTERS = 6, 3


def _together(targets: list[Callable[[], object]]) -> list[object]:
    """Run each target in its own thread, released at once; return results or exceptions."""
    barrier, results = threading.Barrier(len(targets)), [None] * len(targets)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = targets[i]()
        except Exception as exc:  # collected: the test asserts on each outcome
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


class _NoWorkers:
    """A broker that takes every message: this test runs no worker."""

    def enqueue_job(self, job_id: str) -> None:
        pass

    def reachable(self, *, retry: bool = True) -> bool:
        return True


def test_a_dataset_being_deleted_is_never_picked_by_a_new_job(database, tiny_models):
    payload_for = lambda ds: JobCreate.model_validate(job_body("crisis", ds, *tiny_models))  # noqa: E731

    def submit(ds: str) -> Callable[[], object]:
        def go() -> object:
            with session_scope() as db:
                return submit_job(db=db, payload=payload_for(ds), principal=LOCAL,
                                  broker=_NoWorkers())[0].id
        return go

    def delete(ds: str) -> Callable[[], object]:
        def go() -> object:
            with session_scope() as db:
                delete_dataset(db=db, dataset_id=ds, viewer=LOCAL)
            return "deleted"
        return go

    outcomes = set()
    for _ in range(ROUNDS):
        with session_scope() as db:
            ds = create_dataset(db=db, name="corpus", owner=LOCAL.key_id,
                                rows=[Row(t, None) for t in corpus(12)]).id
        results = _together([delete(ds), *(submit(ds) for _ in range(SUBMITTERS))])
        deleted, submissions = results[0], results[1:]
        with session_scope() as db:
            jobs = [j for j in db.scalars(select(Job))
                    if j.spec["data"]["dataset_id"] == ds]
            exists = db.get(Dataset, ds) is not None
        created = [s for s in submissions if isinstance(s, str)]
        for s in submissions:
            assert isinstance(s, str) or (isinstance(s, Invalid)
                                          and s.code == "dataset_not_found"), s
        assert sorted(j.id for j in jobs) == sorted(created)
        if deleted == "deleted":
            outcomes.add("delete first")
            assert not exists and not jobs, "a job names a deleted dataset"
        else:
            outcomes.add("submission first")
            assert isinstance(deleted, Conflict) and deleted.code == "dataset_in_use", deleted
            assert exists and jobs
            assert set(deleted.details["jobs"]) <= {j.id for j in jobs}
    assert outcomes  # each round ended in one of the two orders

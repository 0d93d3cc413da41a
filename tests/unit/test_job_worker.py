"""GET /jobs/{id} names the worker that holds (then last held) the job's lease."""

from __future__ import annotations

from app.core.db import session_scope
from app.jobs import lifecycle
from app.models import Job, JobEvent, JobState
from app.models.base import new_id, utcnow
from app.models.owned import LOCAL_OWNER


def _queued_job() -> str:
    job_id = new_id("job")
    with session_scope() as db:
        db.add(Job(id=job_id, name="crisis", state="queued", progress=0.0, spec={}, metrics={},
                   attempts=0, max_attempts=3, woken_at=utcnow(), owner=LOCAL_OWNER))
    return job_id


def test_the_job_shows_its_worker_while_running_and_after_it_ends(client):
    job_id = _queued_job()
    before = client.get(f"/jobs/{job_id}").json()
    assert before["worker"] is None and before["lease_expires_at"] is None

    with session_scope() as db:
        assert lifecycle.claim(db, job_id, "box:41:abc123", 60, worker="tailor-41@box")
    running = client.get(f"/jobs/{job_id}").json()
    assert running["worker"] == "tailor-41@box" and running["lease_expires_at"] is not None
    with session_scope() as db:
        claimed = db.query(JobEvent).filter_by(job_id=job_id, kind="claimed").one()
        assert claimed.data["worker"] == "tailor-41@box"

    with session_scope() as db:
        for state in (JobState.ANNOTATING, JobState.REGISTERING):  # a job succeeds registered
            lifecycle.advance(db, job_id, "box:41:abc123", state=state, phase=None,
                              progress=0.9, restart=state == JobState.ANNOTATING)
        assert lifecycle.finish(db, job_id, "box:41:abc123", state=JobState.SUCCEEDED)
    done = client.get(f"/jobs/{job_id}").json()
    assert done["state"] == "succeeded"
    assert done["worker"] == "tailor-41@box" and done["lease_expires_at"] is None


def test_a_claim_without_a_node_name_shows_the_lease_owner_and_long_names_fit(client):
    job_id = _queued_job()
    with session_scope() as db:
        assert lifecycle.claim(db, job_id, "box:7:ffffff", 60)
    assert client.get(f"/jobs/{job_id}").json()["worker"] == "box:7:ffffff"

    other = _queued_job()
    with session_scope() as db:
        assert lifecycle.claim(db, other, "box:8:eeeeee", 60, worker="n" * 300 + "@box")
    assert client.get(f"/jobs/{other}").json()["worker"] == "n" * 255

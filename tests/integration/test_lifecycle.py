"""Full lifecycle on real processes: distributed (PostgreSQL, Redis, Celery) and embedded."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.integration.lifecycle import run_lifecycle
from tests.integration.report import record
from tests.support import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE = ["queued", "annotating", "distilling", "evaluating", "registering", "succeeded"]
AUDIT = """
CREATE TABLE state_audit (id serial PRIMARY KEY, job_id text, old_state text, new_state text);
CREATE FUNCTION audit_state() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO state_audit (job_id, old_state, new_state) VALUES (NEW.id, NULL, NEW.state);
  ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
    INSERT INTO state_audit (job_id, old_state, new_state) VALUES (NEW.id, OLD.state, NEW.state);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_state_audit AFTER INSERT OR UPDATE ON jobs
  FOR EACH ROW EXECUTE FUNCTION audit_state();
"""


def test_distributed_lifecycle_on_postgres_redis_and_a_celery_worker(distributed: Stack,
                                                                     tiny_models, pg_url):
    distributed.start_api()  # runs the real Alembic migrations on the fresh database
    engine = create_engine(pg_url)
    with engine.begin() as conn:  # a test-only trigger records every change of jobs.state
        conn.execute(text(AUDIT))
    distributed.start_worker()
    with distributed.client() as client:
        try:
            job = run_lifecycle(client, tiny_models)
        except BaseException:
            print(distributed.logs())
            raise
    with engine.connect() as conn:
        states = [r.new_state for r in conn.execute(
            text("SELECT new_state FROM state_audit WHERE job_id = :j ORDER BY id"),
            {"j": job["id"]})]
        row = conn.execute(text("SELECT state, attempts, lease_owner FROM jobs WHERE id = :j"),
                           {"j": job["id"]}).one()
        version = conn.execute(text("SELECT count(*) FROM model_versions")).scalar()
    engine.dispose()
    assert states == PIPELINE
    assert row.state == "succeeded" and row.attempts == 1 and row.lease_owner is None
    assert version == 1


@pytest.mark.reliability
def test_embedded_lifecycle_on_sqlite_and_the_filesystem_broker(embedded_stack: Stack,
                                                                tiny_models):
    embedded_stack.port = 0
    # app.serve without --no-worker: the same one-command start a user gets from `make serve`.
    import sys

    import httpx

    from tests.support import free_port, wait_for

    embedded_stack.port = free_port()
    proc = embedded_stack.spawn("serve", [sys.executable, "-m", "app.serve",
                                          "--port", str(embedded_stack.port)])
    wait_for(lambda: httpx.get(f"{embedded_stack.url}/readyz", timeout=2).status_code == 200,
             60, what="embedded /readyz")
    with embedded_stack.client() as client:
        try:
            job = run_lifecycle(client, tiny_models)
        except BaseException:
            print(proc.tail(80))
            raise
    db = embedded_stack.home / "tailor.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        states = [r.state for r in conn.execute(text(
            "SELECT state FROM job_events WHERE job_id = :j AND kind = 'state' ORDER BY id"),
            {"j": job["id"]})]
    engine.dispose()
    assert states == PIPELINE
    assert (embedded_stack.home / "broker" / "queue").is_dir()
    # run_lifecycle asserted the warnings and the force rule on this real stack.
    record(18, "degenerate results are never silent (48-text corpus, 4-text eval set)",
           "a job whose corpus and splits are too small to trust, run by a real worker",
           ["job succeeds with warnings; the version and its card carry the same warnings",
            "alias move: 409 version_has_warnings without force, 200 with force"],
           {"warnings": ", ".join(w["code"] for w in job["warnings"])})

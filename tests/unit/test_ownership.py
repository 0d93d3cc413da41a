"""Keys own what they create (embedded mode: SQLite, in-process app): migration 0003 backfills
old rows as admin's without losing their records; train holds classify; env key ids are
stable; with auth off everything belongs to one local owner."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures import legacy
from tests.support import embedded_home

ADMIN, TRAINER, READER = "own-admin", "own-trainer", "own-reader"
KEYS = f"{ADMIN}:admin,{TRAINER}:train,{READER}:classify"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def records(n: int = 2) -> list[dict[str, str]]:
    return [{"text": f"text number {i}"} for i in range(n)]


@pytest.fixture
def home_at_0002(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An embedded home whose database stands at revision 0002; yields its URL."""
    from app.core.config import get_settings

    with embedded_home(tmp_path, monkeypatch, revision="0002"):
        yield get_settings().db_url


def restart_app(monkeypatch: pytest.MonkeyPatch, keys: str) -> TestClient:
    """A fresh app with `keys` configured, as after a restart (settings and key caches gone)."""
    from app.core import security
    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("TAILOR_API_KEYS", keys)
    get_settings.cache_clear()
    security._env_keys.cache_clear()
    return TestClient(create_app())


def test_migration_backfills_old_rows_as_admin_and_keeps_their_children(
        home_at_0002: str, monkeypatch: pytest.MonkeyPatch):
    from app.core.migrate import downgrade, upgrade

    old = legacy.seed(home_at_0002)
    upgrade(home_at_0002)
    assert legacy.owners(home_at_0002, old) == ("admin", "admin")
    assert legacy.children(home_at_0002, old) == (old.records, old.events)
    with restart_app(monkeypatch, KEYS) as client:
        admin_view = client.get(f"/datasets/{old.dataset_id}", headers=bearer(ADMIN))
        assert admin_view.status_code == 200 and admin_view.json()["owner"] == "admin"
        admin_job = client.get(f"/jobs/{old.job_id}", headers=bearer(ADMIN))
        assert admin_job.json()["owner"] == "admin"
        assert client.get(f"/datasets/{old.dataset_id}", headers=bearer(TRAINER)).status_code \
            == 404
        assert client.get(f"/jobs/{old.job_id}", headers=bearer(TRAINER)).status_code == 404
        assert client.get("/jobs", headers=bearer(TRAINER)).json()["jobs"] == []
        # The legacy Idempotency-Key belongs to admin's rows: another key gets its own row.
        fresh = client.post("/datasets", json={"name": "mine", "records": records()},
                            headers={**bearer(TRAINER),
                                     "Idempotency-Key": old.idempotency_key})
        assert fresh.status_code == 201 and fresh.json()["id"] != old.dataset_id
    downgrade(home_at_0002, "0002")  # SQLite rebuilds the tables: children must survive
    assert legacy.children(home_at_0002, old) == (old.records, old.events)


def test_train_keys_hold_classify_but_classify_keys_do_not_hold_train(client, monkeypatch):
    with restart_app(monkeypatch, KEYS) as keyed:
        assert keyed.get("/models", headers=bearer(TRAINER)).status_code == 200
        unknown = keyed.post("/classify", json={"model": "nothing", "texts": ["flood"]},
                             headers=bearer(TRAINER))
        assert unknown.status_code == 404, unknown.text  # past auth: the model is absent
        assert keyed.get("/ui/parts/models", headers=bearer(TRAINER)).status_code == 200
        for path in ("/jobs", "/datasets", "/ui/parts/jobs"):
            assert keyed.get(path, headers=bearer(READER)).status_code == 403
        assert keyed.get("/keys", headers=bearer(TRAINER)).status_code == 403


def test_env_key_ids_are_derived_from_the_hash_and_survive_a_restart(client, monkeypatch):
    expected = "env:" + hashlib.sha256(TRAINER.encode()).hexdigest()[:12]
    with restart_app(monkeypatch, KEYS) as first:
        created = first.post("/datasets", json={"name": "kept", "records": records()},
                             headers=bearer(TRAINER))
        assert created.status_code == 201 and created.json()["owner"] == expected
    # Restarted with the keys in another order and one more key: ownership holds.
    with restart_app(monkeypatch, f"another:train,{TRAINER}:train,{ADMIN}:admin") as second:
        again = second.get(f"/datasets/{created.json()['id']}", headers=bearer(TRAINER))
        assert again.status_code == 200 and again.json()["owner"] == expected
        assert second.get(f"/datasets/{created.json()['id']}",
                          headers=bearer("another")).status_code == 404


def test_with_auth_off_everything_belongs_to_one_local_owner(client):
    made = [client.post("/datasets", json={"name": f"d{i}", "records": records()}).json()
            for i in range(2)]
    assert {d["owner"] for d in made} == {"local"}
    listed = client.get("/datasets").json()["datasets"]
    assert {d["id"] for d in listed} == {d["id"] for d in made}
    # Turning auth on later: the local owner's rows are admin-only, not a new key's.
    key = client.post("/keys", json={"name": "t", "scopes": ["train"]}).json()["key"]
    boss = client.post("/keys", json={"name": "b", "scopes": ["admin"]},
                       headers=bearer(key))
    assert boss.status_code == 403
    assert client.get("/datasets", headers=bearer(key)).json()["datasets"] == []
    assert client.get(f"/datasets/{made[0]['id']}", headers=bearer(key)).status_code == 404

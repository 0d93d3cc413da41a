"""API keys in the database: created by an admin (shown once), stored as sha256, scoped,
revoked at once; bootstrap keys come from TAILOR_API_KEYS."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.models import ApiKey

ADMIN = {"Authorization": "Bearer boot-admin"}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_API_KEYS", "boot-admin:admin,boot-reader:classify")
    get_settings.cache_clear()
    return client


def test_admin_creates_a_scoped_key_that_is_shown_once_and_stored_hashed(keyed):
    resp = keyed.post("/keys", json={"name": "dashboard", "scopes": ["classify"]}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    secret = created["key"]
    assert secret.startswith("tlr_") and created["prefix"] == secret[:10]
    assert created["scopes"] == ["classify"] and created["created_by"].startswith("env:")
    listed = keyed.get("/keys", headers=ADMIN).json()["keys"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    with session_scope() as db:
        row = db.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str([getattr(row, c.key) for c in ApiKey.__table__.columns])
    assert keyed.get("/models", headers=_bearer(secret)).status_code == 200
    assert keyed.get("/jobs", headers=_bearer(secret)).status_code == 403
    assert keyed.post("/keys", json={"name": "x", "scopes": ["admin"]},
                      headers=_bearer(secret)).status_code == 403


def test_a_revoked_key_stops_working_at_once(keyed):
    created = keyed.post("/keys", json={"name": "ci", "scopes": ["train"]}, headers=ADMIN).json()
    assert keyed.get("/jobs", headers=_bearer(created["key"])).status_code == 200
    revoked = keyed.delete(f"/keys/{created['id']}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    again = keyed.delete(f"/keys/{created['id']}", headers=ADMIN)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    resp = keyed.get("/jobs", headers=_bearer(created["key"]))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "key_revoked"
    assert keyed.delete("/keys/key_nope", headers=ADMIN).status_code == 404


def test_key_routes_need_the_admin_scope_and_valid_input(keyed):
    assert keyed.get("/keys").status_code == 401
    assert keyed.get("/keys", headers=_bearer("boot-reader")).status_code == 403
    for body in ({"name": "x", "scopes": []}, {"name": "x", "scopes": ["root"]},
                 {"name": "", "scopes": ["train"]}, {"name": "a\x00b", "scopes": ["train"]}):
        resp = keyed.post("/keys", json=body, headers=ADMIN)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["error"]["message"].split(":")[0] in ("scopes", "name", "scopes[0]")


def test_a_stored_key_turns_auth_on_without_bootstrap_keys(client):
    assert client.get("/jobs").status_code == 200  # no keys anywhere: auth is off
    created = client.post("/keys", json={"name": "first", "scopes": ["admin"]}).json()
    resp = client.get("/jobs")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    assert client.get("/jobs", headers=_bearer("guess")).status_code == 401
    assert client.get("/jobs", headers=_bearer(created["key"])).status_code == 200
    assert client.get("/healthz").status_code == 200

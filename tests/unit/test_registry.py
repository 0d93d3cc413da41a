"""The registry over HTTP: aliases that warm, archiving, lineage and cards, 404s and 409s."""

from __future__ import annotations

import pytest

from app.core.config import get_settings
from tests.fixtures.versions import register_tiny


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    return error


@pytest.fixture
def crisis(client, tiny_models):
    """Three versions of `crisis` on the tiny base."""
    return [register_tiny(tiny_models[1], seed=s) for s in (1, 2, 3)]


def _classify(client, model: str, texts=("flood water rose",)):
    return client.post("/classify", json={"model": model, "texts": list(texts)})


def test_alias_move_loads_the_version_before_it_takes_traffic(client, crisis):
    pool = client.app.state.pool
    assert pool.stats()["versions"] == []
    assert client.put("/models/crisis/aliases/production", json={"version": 2}).json() == {
        "name": "crisis", "alias": "production", "version": 2}
    assert pool.stats()["versions"] == ["crisis:2"]  # warm before any request
    assert _classify(client, "crisis@production").json()["version"] == 2
    client.put("/models/crisis/aliases/production", json={"version": 3})
    assert "crisis:3" in pool.stats()["versions"]
    moved = _classify(client, "crisis@production").json()
    assert moved["version"] == 3
    assert moved["results"] == _classify(client, "crisis:3").json()["results"]
    assert client.get("/models").json()["models"][0]["aliases"] == {"production": 3}


def test_an_alias_is_not_moved_onto_a_version_that_cannot_load(client, crisis):
    client.put("/models/crisis/aliases/production", json={"version": 1})
    from app.core.db import session_scope
    from app.registry.service import get_version

    with session_scope() as db:
        path = get_settings().artifacts / get_version(db=db, name="crisis", version=2).artifact_path
    (path / "head.safetensors").write_bytes(b"not the registered head")
    err = _error(client.put("/models/crisis/aliases/production", json={"version": 2}), 503,
                 "artifact_corrupt")
    assert "crisis:2" in err["message"]
    assert _classify(client, "crisis@production").json()["version"] == 1


def test_archive_hides_refuses_aliases_and_keeps_files(client, crisis):
    detail = client.post("/models/crisis/versions/3/archive")
    assert detail.status_code == 200 and detail.json()["archived"] is True
    listed = client.get("/models/crisis").json()
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    assert listed["latest_version"] == 2
    everything = client.get("/models/crisis?include_archived=true").json()["versions"]
    assert [(v["version"], v["archived"]) for v in everything] == [(1, False), (2, False),
                                                                   (3, True)]
    assert client.get("/models").json()["models"][0]["latest_version"] == 2
    # still readable, still on disk, but not served without an alias and not aliasable
    version = client.get("/models/crisis/versions/3").json()
    assert version["archived"] is True
    artifact_dir = get_settings().artifacts / "jobs" / version["lineage"]["job_id"] / "student"
    assert sorted(p.name for p in artifact_dir.iterdir()) == sorted(version["files"])
    _error(_classify(client, "crisis:3"), 409, "version_archived")
    _error(client.put("/models/crisis/aliases/canary", json={"version": 3}), 409,
           "version_archived")
    assert _classify(client, "crisis").json()["version"] == 2  # latest live version
    client.post("/models/crisis/versions/3/unarchive")
    assert _classify(client, "crisis:3").json()["version"] == 3


def test_a_version_an_alias_points_at_cannot_be_archived(client, crisis):
    client.put("/models/crisis/aliases/production", json={"version": 2})
    err = _error(client.post("/models/crisis/versions/2/archive"), 409, "version_aliased")
    assert err["details"] == {"aliases": ["production"]}
    assert client.get("/models/crisis/versions/2").json()["archived"] is False


def test_a_model_with_every_version_archived_is_hidden(client, crisis):
    for v in crisis:
        client.post(f"/models/crisis/versions/{v}/archive")
    assert client.get("/models").json()["models"] == []
    assert [m["name"] for m in client.get("/models?include_archived=true").json()["models"]] == [
        "crisis"]
    err = _error(_classify(client, "crisis"), 404, "model_not_found")
    assert "archived" in err["message"]


def test_every_version_has_lineage_and_a_card(client, crisis):
    for v in crisis:
        detail = client.get(f"/models/crisis/versions/{v}").json()
        lineage, metrics = detail["lineage"], detail["metrics"]
        assert lineage["job_id"] and lineage["teacher"]["uri"] and lineage["code_version"]
        assert lineage["data"]["corpus_sha256"] and lineage["student_base"]["sha256"]
        assert [p["weight"] for p in lineage["prompts"]] == [0.75, 0.25]
        assert metrics["teacher"]["eval"]["macro_f1"] and metrics["student"]["eval"]["macro_f1"]
        assert metrics["student"]["trainable_params"] < metrics["student"]["total_params"]
        assert set(detail["files"]) == {"adapter.safetensors", "head.safetensors",
                                        "student.json"}
        card = client.get(f"/models/crisis/versions/{v}/card")
        assert card.headers["content-type"].startswith("text/markdown")
        assert card.text == detail["card"] and card.text.startswith(f"# crisis v{v}")
        for needle in (lineage["job_id"], "| macro-F1 (labeled eval) | 0.610 | 0.580 |",
                       "120 trainable / 900 total", "`default` weight 0.750", "code version"):
            assert needle in card.text


@pytest.mark.parametrize("ref, status, code", [
    ("ghost", 404, "model_not_found"),
    ("ghost:1", 404, "model_not_found"),
    ("crisis:9", 404, "version_not_found"),
    ("crisis@nope", 404, "alias_not_found"),
    ("crisis@", 422, "invalid"),
    ("Crisis!", 422, "invalid"),
    ("crisis\n", 422, "invalid"),  # once read as "crisis"
    ("crisis:\u0663", 422, "invalid"),  # an Arabic-Indic 3: once read as crisis:3
    ("crisis@prod\n", 422, "invalid"),
])
def test_unknown_references_are_refused(client, crisis, ref, status, code):
    err = _error(_classify(client, ref), status, code)
    assert err["message"].startswith("model") or "model" in err["message"]
    assert client.app.state.pool.stats()["versions"] == []  # nothing loaded, nothing queued
    assert client.app.state.batcher.queued == 0


@pytest.mark.parametrize("method, path, body, status, code", [
    ("get", "/models/ghost", None, 404, "model_not_found"),
    ("get", "/models/crisis/versions/9", None, 404, "version_not_found"),
    ("get", "/models/crisis/versions/9/card", None, 404, "version_not_found"),
    ("post", "/models/crisis/versions/9/archive", None, 404, "version_not_found"),
    ("put", "/models/crisis/aliases/prod", {"version": 9}, 404, "version_not_found"),
    ("put", "/models/crisis/aliases/prod", {"version": 0}, 422, "validation_error"),
    ("put", "/models/crisis/aliases/9lives", {"version": 1}, 422, "invalid"),
    ("put", "/models/crisis/aliases/prod%0A", {"version": 1}, 422, "invalid"),  # was stored
])
def test_registry_routes_refuse_unknown_things(client, crisis, method, path, body, status,
                                               code):
    resp = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    _error(resp, status, code)
    assert client.get("/models").json()["models"][0]["aliases"] == {}

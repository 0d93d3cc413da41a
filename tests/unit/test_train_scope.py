"""A `train` key tries what it trained: it reads the registry and classifies (issue 15.8),
while a `classify` key still cannot reach jobs or datasets (embedded, in-process app)."""

from __future__ import annotations

from tests.fixtures.versions import register_tiny
from tests.unit.test_ownership import KEYS, READER, TRAINER, bearer, restart_app


def test_a_train_key_views_and_classifies_with_models(client, monkeypatch, tiny_models):
    version = register_tiny(tiny_models[1], name="crisis")
    with restart_app(monkeypatch, KEYS) as keyed:
        auth = bearer(TRAINER)
        listed = keyed.get("/models", headers=auth)
        assert [m["name"] for m in listed.json()["models"]] == ["crisis"], listed.text
        assert keyed.get("/models/crisis", headers=auth).json()["latest_version"] == version
        detail = keyed.get(f"/models/crisis/versions/{version}", headers=auth)
        assert detail.status_code == 200 and detail.json()["labels"] == ["crisis", "calm"]
        card = keyed.get(f"/models/crisis/versions/{version}/card", headers=auth)
        assert card.status_code == 200 and "crisis" in card.text
        assert keyed.get("/ui/parts/models/crisis", headers=auth).status_code == 200
        answer = keyed.post("/classify", json={"model": f"crisis:{version}",
                                               "texts": ["flood", "stock market rose"]},
                            headers=auth)
        assert answer.status_code == 200, answer.text
        assert [r["label"] in ("crisis", "calm") for r in answer.json()["results"]] == [True] * 2
        # Moving aliases stays an admin's act; reading jobs stays a trainer's.
        moved = keyed.put("/models/crisis/aliases/production", json={"version": version},
                          headers=auth)
        assert moved.status_code == 403, moved.text
        assert keyed.get("/jobs", headers=bearer(READER)).status_code == 403

"""The model page's evaluations table: grouped by dataset so versions sit side by side,
the best macro-F1 of each dataset marked, user-supplied names escaped, owners respected."""

from __future__ import annotations

import re
from datetime import timedelta

from app.core.db import session_scope
from app.core.security import ENV_ID_HEX, hash_key
from app.models import Evaluation, ModelVersion, RegisteredModel
from app.models.base import new_id, utcnow

EVIL = "<script>alert(1)</script>"
READER = "reader-key"  # a classify-only key; its evaluations are the ones it sees
READER_ID = f"env:{hash_key(READER)[:ENV_ID_HEX]}"


def add_evaluation(version: int, dataset_id: str, dataset_name: str, macro_f1: float,
                   minutes_ago: int, owner: str = READER_ID) -> str:
    ev_id = new_id("ev")
    with session_scope() as db:
        db.add(Evaluation(
            id=ev_id, owner=owner, model_name="crisis", model_version=version,
            model_ref=f"crisis:{version}", dataset_id=dataset_id, dataset_name=dataset_name,
            dataset_sha256="0" * 64, labels=["crisis", "calm"], multi_label=False, n=40,
            skipped_unlabeled=0, truncated=0, accuracy=0.5, macro_f1=macro_f1, micro_f1=None,
            roc_auc=0.6, ece=0.125, report={}, seconds=0.1,
            created_at=utcnow() - timedelta(minutes=minutes_ago)))
    return ev_id


def test_versions_scored_on_one_dataset_share_a_group_with_the_best_marked(client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_API_KEYS", f"admin-key,{READER}:classify")
    get_settings.cache_clear()
    auth = {"Authorization": f"Bearer {READER}"}
    with session_scope() as db:
        db.add(RegisteredModel(name="crisis", latest_version=2))
        db.flush()
        for v in (1, 2):
            db.add(ModelVersion(model_name="crisis", version=v, artifact_path=f"crisis/{v}",
                                files={}, base_model="minilm", labels=["crisis", "calm"],
                                metrics={}, lineage={}, card=""))
    empty = client.get("/ui/parts/models/crisis", headers=auth).text
    assert 'id="evaluations"' in empty and "No evaluation yet" in empty
    old_v1 = add_evaluation(1, "ds_gold", EVIL, 0.71, minutes_ago=30)
    other = add_evaluation(2, "ds_other", "other set", 0.40, minutes_ago=20)
    new_v2 = add_evaluation(2, "ds_gold", EVIL, 0.64, minutes_ago=10)
    hidden = add_evaluation(2, "ds_gold", EVIL, 0.99, minutes_ago=5, owner="key_someone")
    html = client.get("/ui/parts/models/crisis", headers=auth).text
    table = html[html.index('id="evaluations"'):]
    assert EVIL not in table and "&lt;script&gt;" in table
    assert hidden not in table, "another key's evaluation is not shown"
    groups = re.findall(r'<tbody data-dataset="([^"]+)">(.*?)</tbody>', table, re.S)
    assert [d for d, _ in groups] == ["ds_gold", "ds_other"], "latest-scored dataset first"
    gold_rows = re.findall(r'data-evaluation="([^"]+)"', groups[0][1])
    assert gold_rows == [new_v2, old_v1], "in a dataset, newest version first"
    assert re.search(rf'data-evaluation="{old_v1}".*?class="better">0\.710<', groups[0][1],
                     re.S), "the best macro-F1 on the dataset is marked"
    assert 'class="better"' not in groups[1][1], "a lone evaluation has nothing to beat"
    assert other in groups[1][1] and "0.125" in table and "40" in table
    everyone = client.get("/ui/parts/models/crisis",
                          headers={"Authorization": "Bearer admin-key"}).text
    assert hidden in everyone, "admin keys see every owner's evaluations"


def test_listing_by_a_reference_instead_of_a_name_is_refused_not_empty(client):
    """`?model=crisis:2` or `crisis@production` matched nothing and answered an empty list,
    which reads as "never evaluated"; a model name is what the filter takes."""
    assert client.get("/evaluations", params={"model": "crisis"}).status_code == 200
    for ref in ("crisis:2", "crisis@production", "Crisis"):
        resp = client.get("/evaluations", params={"model": ref})
        assert resp.status_code == 422, ref
        assert resp.json()["error"]["message"].startswith("query.model"), resp.text

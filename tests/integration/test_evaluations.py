"""Stored evaluations on a real API process (embedded: SQLite, no worker needed): the numbers
equal an independent computation from /classify's answers for the same texts, lists and
ownership behave like datasets and jobs, and every bad input is a 4xx naming the item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny import CALM_TEXTS, CRISIS_TEXTS, corpus
from tests.fixtures.versions import register_tiny
from tests.integration.report import record_input
from tests.support import Stack, embedded_home, make_env

pytestmark = [pytest.mark.integration]

OWNER, OTHER, READER, ADMIN = "owner-key", "other-key", "reader-key", "admin-key"
CAP = 60  # TAILOR_MAX_EVALUATION_ROWS for this API
HAZARDS = ("flood", "fire", "storm")
ECE_BINS = 15


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
        ) -> Iterator[Stack]:
    """One API process with two versions of `crisis` (binary) and one of `hazards`
    (multi-label), and four keys: two trainers, a classify-only reader and an admin."""
    tmp = tmp_path_factory.mktemp("evaluations")
    with pytest.MonkeyPatch.context() as mp, embedded_home(tmp, mp) as home:
        register_tiny(tiny_models[1], seed=1)
        register_tiny(tiny_models[1], seed=2)
        register_tiny(tiny_models[1], name="hazards", labels=HAZARDS, multi_label=True, seed=3)
        stack = Stack(home, make_env(
            home, TAILOR_API_KEYS=f"{OWNER}:train,{OTHER}:train,{READER}:classify,{ADMIN}",
            TAILOR_MAX_EVALUATION_ROWS=str(CAP),
            TAILOR_SERVING_MAX_QUEUE_DELAY_MS="60000"))  # no 429s on a busy 2-core machine
        stack.start_api()
        try:
            yield stack
        finally:
            stack.discard()


def upload(client: httpx.Client, records: list[dict[str, Any]], key: str = OWNER) -> str:
    resp = client.post("/datasets", json={"name": "labeled", "records": records},
                       headers=auth(key))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def classify(client: httpx.Client, model: str, texts: list[str]) -> list[dict[str, Any]]:
    resp = client.post("/classify", json={"model": model, "texts": texts}, headers=auth(OWNER))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["results"])


def evaluate(client: httpx.Client, model: str, dataset_id: str, key: str = OWNER,
             **headers: str) -> httpx.Response:
    return client.post("/evaluations", json={"model": model, "dataset_id": dataset_id},
                       headers={**auth(key), **headers})


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return dict(resp.json()["error"])


# ---- independent metrics: counted from /classify's answers, no shared code with the engine
def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def expected_ece(confidence: list[float], correct: list[bool]) -> float:
    total = 0.0
    for b in range(ECE_BINS):
        lo, hi = b / ECE_BINS, (b + 1) / ECE_BINS
        members = [i for i, c in enumerate(confidence) if lo < c <= hi]
        if members:
            gap = (sum(confidence[i] for i in members) - sum(correct[i] for i in members))
            total += abs(gap) / len(confidence)
    return total


def pairwise_auc(scores: list[float], positive: list[bool]) -> float:
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def binary_expectations(results: list[dict[str, Any]], gold: list[str]) -> dict[str, Any]:
    labels = ["crisis", "calm"]
    predicted = [r["label"] for r in results]
    per_class = {}
    for label in labels:
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, gold, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, gold, strict=True))
        per_class[label] = {"f1": f1(tp, fp, fn), "support": gold.count(label)}
    correct = [p == g for p, g in zip(predicted, gold, strict=True)]
    return {
        "accuracy": sum(correct) / len(gold),
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(labels),
        "per_class": per_class,
        "matrix": [[sum(g == a and p == b for p, g in zip(predicted, gold, strict=True))
                    for b in labels] for a in labels],
        "ece": expected_ece([max(r["scores"].values()) for r in results], correct),
        "roc_auc": pairwise_auc([r["scores"]["crisis"] for r in results],
                                [g == "crisis" for g in gold]),
    }


def test_scores_equal_what_classify_answers_and_versions_compare_side_by_side(api: Stack):
    texts = corpus(40)
    gold = ["crisis" if any(t.startswith(c) for c in CRISIS_TEXTS) else "calm" for t in texts]
    records = [{"text": t, "label": g} for t, g in zip(texts, gold, strict=True)]
    records += [{"text": "unlabeled flood report"}, {"text": "unlabeled market news"}]
    with api.client() as client:
        ds = upload(client, records)
        alias = client.put("/models/crisis/aliases/production", json={"version": 1},
                           headers=auth(ADMIN))
        assert alias.status_code == 200, alias.text
        stored = {}
        for ref, version in (("crisis@production", 1), ("crisis:2", 2)):
            resp = evaluate(client, ref, ds)
            assert resp.status_code == 201, resp.text
            ev = resp.json()
            assert (ev["model"], ev["version"], ev["ref"]) == ("crisis", version, ref)
            assert (ev["n"], ev["skipped_unlabeled"], ev["dataset_id"]) == (40, 2, ds)
            want = binary_expectations(classify(client, f"crisis:{version}", texts), gold)
            assert ev["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
            assert ev["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-9)
            assert ev["confusion"] == {"labels": ["crisis", "calm"], "matrix": want["matrix"]}
            assert ev["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-9)
            assert ev["ece"] == pytest.approx(want["ece"], abs=1e-9)
            for label, expected in want["per_class"].items():
                assert ev["per_class"][label]["f1"] == pytest.approx(expected["f1"], abs=1e-9)
                assert ev["per_class"][label]["support"] == expected["support"]
            assert ev["micro_f1"] is None and ev["majority"]["decision"] in ("crisis", "calm")
            stored[version] = ev
        # the two seeds give different students: the comparison is not trivially equal
        assert stored[1]["per_class"] != stored[2]["per_class"] or \
            stored[1]["ece"] != stored[2]["ece"]

        listed = client.get("/evaluations", params={"model": "crisis"}, headers=auth(OWNER))
        assert [e["id"] for e in listed.json()["evaluations"]] == [stored[2]["id"],
                                                                  stored[1]["id"]]
        page = client.get("/evaluations", params={"model": "crisis", "limit": 1},
                          headers=auth(OWNER)).json()
        assert [e["id"] for e in page["evaluations"]] == [stored[2]["id"]]
        assert page["next_offset"] == 1
        by_version = client.get("/evaluations", params={"model": "crisis", "version": 1},
                                headers=auth(OWNER)).json()["evaluations"]
        assert [e["id"] for e in by_version] == [stored[1]["id"]]
        by_data = client.get("/evaluations", params={"dataset_id": ds}, headers=auth(OWNER))
        assert len(by_data.json()["evaluations"]) == 2
        one = client.get(f"/evaluations/{stored[1]['id']}", headers=auth(OWNER))
        assert one.status_code == 200 and one.json() == stored[1]

        # the model page puts both versions' scores on this dataset in one table
        page_html = client.get("/ui/parts/models/crisis", headers=auth(OWNER)).text
        table = page_html[page_html.index('id="evaluations"'):]
        for ev in stored.values():
            assert f'data-evaluation="{ev["id"]}"' in table
            assert f"{ev['macro_f1']:.3f}" in table and f"{ev['ece']:.3f}" in table


def test_multi_label_scores_per_label_with_micro_and_macro_f1(api: Stack):
    rows = [("flood water rose in the city", ["flood"]), ("wildfire and storm", ["fire", "storm"]),
            ("fire in the village", ["fire"]), ("football match won", []),
            ("storm and flood at the coast", ["storm", "flood"]), ("market shares fell", []),
            ("storms hit the coast", ["storm"]), ("flood floods water", ["flood"])]
    with api.client() as client:
        ds = upload(client, [{"text": t, "label": g} for t, g in rows])
        resp = evaluate(client, "hazards", ds)
        assert resp.status_code == 201, resp.text
        ev = resp.json()
        results = classify(client, "hazards:1", [t for t, _ in rows])
    pairs = [(set(r["label"]), set(g)) for r, (_, g) in zip(results, rows, strict=True)]
    counts = {label: [sum(label in p and label in g for p, g in pairs),
                      sum(label in p and label not in g for p, g in pairs),
                      sum(label in g and label not in p for p, g in pairs)]
              for label in HAZARDS}
    assert ev["multi_label"] is True and ev["confusion"] is None and ev["roc_auc"] is None
    assert ev["accuracy"] == pytest.approx(sum(p == g for p, g in pairs) / 8)
    for label, (tp, fp, fn) in counts.items():
        assert ev["per_class"][label]["f1"] == pytest.approx(f1(tp, fp, fn), abs=1e-9)
        assert ev["per_class"][label]["support"] == tp + fn
    assert ev["macro_f1"] == pytest.approx(
        sum(f1(*c) for c in counts.values()) / len(HAZARDS), abs=1e-9)
    assert ev["micro_f1"] == pytest.approx(
        f1(*(sum(c[i] for c in counts.values()) for i in range(3))), abs=1e-9)


def test_bad_inputs_are_4xx_naming_the_item_and_owners_see_only_their_own(api: Stack):
    with api.client() as client:
        labeled = [{"text": t, "label": "crisis"} for t in CRISIS_TEXTS] + \
                  [{"text": t, "label": "calm"} for t in CALM_TEXTS]
        mine = upload(client, labeled)
        theirs = upload(client, labeled, key=OTHER)
        unlabeled = upload(client, [{"text": t} for t in CRISIS_TEXTS])
        unknown = upload(client, [*labeled, {"text": "storm at the coast", "label": "storm"},
                                  {"text": "fire in the city", "label": "wildfire"},
                                  {"text": "storms again", "label": "storm"}])
        several = upload(client, [*labeled, {"text": "flood and fire", "label":
                                             ["crisis", "calm"]}])
        too_big = upload(client, [{"text": f"{t} {i}", "label": "calm"}
                                  for i, t in enumerate(corpus(CAP + 1))])

        assert error(evaluate(client, "nosuchmodel", mine), 404)["code"] == "model_not_found"
        assert error(evaluate(client, "crisis:9", mine), 404)["code"] == "version_not_found"
        assert error(evaluate(client, "crisis@staging", mine), 404)["code"] == "alias_not_found"
        assert error(evaluate(client, "../crisis", mine), 422)["details"]["field"] == "model"
        absent = error(evaluate(client, "crisis", "ds_0000000000000000"), 422)
        other = error(evaluate(client, "crisis", theirs), 422)
        assert absent["code"] == other["code"] == "dataset_not_found"
        assert other["message"] == absent["message"].replace("ds_0000000000000000", theirs)
        assert error(evaluate(client, "crisis", mine, key=READER), 422)["code"] == \
            "dataset_not_found"
        err = error(evaluate(client, "crisis", unlabeled), 422)
        assert err["code"] == "dataset_unlabeled" and err["details"]["field"] == "dataset_id"
        err = error(evaluate(client, "crisis", unknown), 422)
        assert err["code"] == "labels_unknown"
        n = len(labeled)
        assert err["details"]["unknown_labels"] == {"storm": {"count": 2, "rows": [n, n + 2]},
                                                    "wildfire": {"count": 1, "rows": [n + 1]}}
        assert "'storm' (rows" in err["message"] and "'wildfire'" in err["message"]
        err = error(evaluate(client, "crisis", several), 422)
        assert err["code"] == "labels_invalid" and err["details"]["rows"] == [n]
        err = error(evaluate(client, "crisis", too_big), 422)
        assert err["code"] == "dataset_too_large" and err["details"]["limit"] == CAP
        for body in ({"model": "crisis"}, {"model": "crisis", "dataset_id": mine, "x": 1},
                     {"model": 3, "dataset_id": mine}):
            resp = client.post("/evaluations", json=body, headers=auth(OWNER))
            assert error(resp, 422)["code"] == "validation_error"
        assert error(client.post("/evaluations", json={"model": "crisis", "dataset_id": mine}),
                     401)["code"] == "unauthorized"

        # Idempotency-Key: a replay returns the stored evaluation; another body is refused
        first = evaluate(client, "crisis", mine, **{"Idempotency-Key": "k1"})
        again = evaluate(client, "crisis", mine, **{"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"]
        err = error(evaluate(client, "crisis:2", mine, **{"Idempotency-Key": "k1"}), 422)
        assert err["code"] == "idempotency_mismatch"
        # the same key from another owner is another evaluation
        reused = evaluate(client, "crisis", theirs, key=OTHER, **{"Idempotency-Key": "k1"})
        assert reused.status_code == 201 and reused.json()["id"] != first.json()["id"]

        # ownership: another key's evaluation answers like an absent one; admin sees all
        mine_id, theirs_id = first.json()["id"], reused.json()["id"]
        gone = error(client.get("/evaluations/ev_0000000000000000", headers=auth(OWNER)), 404)
        hidden = error(client.get(f"/evaluations/{theirs_id}", headers=auth(OWNER)), 404)
        assert hidden["message"] == gone["message"].replace("ev_0000000000000000", theirs_id)
        ids = {e["id"] for e in client.get("/evaluations", params={"limit": 500},
                                           headers=auth(OWNER)).json()["evaluations"]}
        assert mine_id in ids and theirs_id not in ids
        assert client.get("/evaluations", headers=auth(READER)).json()["evaluations"] == []
        everyone = {e["id"] for e in client.get("/evaluations", params={"limit": 500},
                                                headers=auth(ADMIN)).json()["evaluations"]}
        assert {mine_id, theirs_id} <= everyone
        by_admin = evaluate(client, "crisis", mine, key=ADMIN)  # admin keys use any dataset
        assert by_admin.status_code == 201, by_admin.text
        assert error(client.get(f"/evaluations/{by_admin.json()['id']}", headers=auth(OWNER)),
                     404)["code"] == "not_found"
        page_html = client.get("/ui/parts/models/crisis", headers=auth(OWNER)).text
        assert mine_id in page_html and theirs_id not in page_html
    assert "Traceback" not in api.logs() and "unhandled error" not in api.logs()
    record_input("eval rows whose labels are empty, unknown or of the wrong type",
                 ["POST /evaluations"],
                 ["'storm' and 'wildfire' (unknown to the version)",
                  '["crisis", "calm"] (single-label version)', "a dataset without labels"],
                 ["422 labels_unknown naming every unknown label with its rows",
                  "422 labels_invalid naming the rows", "422 dataset_unlabeled"])

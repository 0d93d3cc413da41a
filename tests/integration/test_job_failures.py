"""Jobs that cannot produce a sensible model fail early with a stable error code."""

from __future__ import annotations

import sys

import pytest

from tests.support import Stack, job_body

pytestmark = pytest.mark.integration


@pytest.fixture
def client(embedded_stack: Stack):
    embedded_stack.start_serve([sys.executable, "-m", "app.serve"])
    with embedded_stack.client() as c:
        yield c


def _dataset(client, texts):
    return client.post("/datasets", json={"name": "d", "records": [{"text": t} for t in texts]}
                       ).json()["id"]


def test_failures_carry_codes_and_register_nothing(client, tiny_models):
    ds = _dataset(client, ["flood water rose", "the team won", "fire in the city",
                           "market fell", "storm killed people"])
    # Doomed jobs are refused at submission, on the real server, with the engine's codes.
    # Two answers that begin with the same token: the teacher could not tell them apart.
    body = job_body("collide", ds, *tiny_models)
    body["task"]["labels"] = [{"name": "fire"}, {"name": "fire_storm"}]  # "fire storm"
    collide = client.post("/jobs", json=body)
    # A corpus that is one text repeated: nothing to split into training and held-out data.
    same = _dataset(client, ["same text"] * 5)
    tiny = client.post("/jobs", json=job_body("tiny", same, *tiny_models))
    for resp, code, field in ((collide, "verbalizer_collision", "task.labels[1]"),
                              (tiny, "corpus_too_small", "data.dataset_id")):
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == code
        assert resp.json()["error"]["details"] == {"field": field}
    # A package outside the operator's allow-list: refused at submission, nothing downloaded.
    ghost = client.post("/jobs", json=job_body(
        "ghost", ds, "pypi://no-such-tailor-model-pkg==0.0.1/x", tiny_models[1]))
    assert ghost.status_code == 422, ghost.text
    assert ghost.json()["error"]["code"] == "model_source_not_allowed"
    assert client.get("/jobs").json()["jobs"] == []
    assert client.get("/models").json()["models"] == []

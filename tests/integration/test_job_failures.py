"""Jobs that cannot produce a sensible model fail early with a stable error code."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.support import Stack, free_port, job_body, wait_for, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture
def client(embedded_stack: Stack):
    embedded_stack.port = free_port()
    embedded_stack.spawn("serve", [sys.executable, "-m", "app.serve",
                                   "--port", str(embedded_stack.port)])
    wait_for(lambda: httpx.get(f"{embedded_stack.url}/readyz", timeout=2).status_code == 200,
             60, what="embedded /readyz")
    with embedded_stack.client() as c:
        yield c


def _dataset(client, texts):
    return client.post("/datasets", json={"name": "d", "records": [{"text": t} for t in texts]}
                       ).json()["id"]


def test_failures_carry_codes_and_register_nothing(client, tiny_models):
    ds = _dataset(client, ["flood water rose", "the team won", "fire in the city",
                           "market fell", "storm killed people"])
    # Two answers that begin with the same token: the teacher could not tell them apart.
    body = job_body("collide", ds, *tiny_models)
    body["task"]["labels"] = [{"name": "fire"}, {"name": "fire_storm"}]  # "fire storm"
    collide = client.post("/jobs", json=body).json()["id"]
    # A corpus that is one text repeated: nothing to split into training and held-out data.
    same = _dataset(client, ["same text"] * 5)
    tiny = client.post("/jobs", json=job_body("tiny", same, *tiny_models)).json()["id"]
    # A package outside the operator's allow-list: refused at submission, nothing downloaded.
    ghost = client.post("/jobs", json=job_body(
        "ghost", ds, "pypi://no-such-tailor-model-pkg==0.0.1/x", tiny_models[1]))
    assert ghost.status_code == 422, ghost.text
    assert ghost.json()["error"]["code"] == "model_source_not_allowed"

    expected = {collide: "verbalizer_collision", tiny: "empty_corpus"}
    for job_id, code in expected.items():
        job = wait_job(client, job_id, timeout=180)
        assert job["state"] == "failed", job
        assert job["error"]["code"] == code, job["error"]
        assert job["error"]["message"]
        assert job["model"] is None
    assert client.get("/models").json()["models"] == []

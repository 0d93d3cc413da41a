"""A hostile key against a real Tailor (embedded mode: SQLite + filesystem broker, a worker).

What a review found after ownership and model sources were built, each now refused:
a `train` key registering under another key's model name (the bare name serves the latest
version, so it would replace what every caller of that name gets); dashboard links whose id
steers the page's keyed fetch to another route (`..\\` is `../` to a browser); model paths
the file system cannot look up (a 500); a `classify` key reaching training routes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.tiny import corpus
from tests.integration.report import record, record_input
from tests.support import Stack, job_body, make_env, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
A, B, READER, ROOT = "hostile-a-train", "hostile-b-train", "hostile-reader", "hostile-root"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
          ) -> Iterator[Stack]:
    """An API and a worker whose allow-list is TAILOR_HOME/models (the tiny models)."""
    home = tmp_path_factory.mktemp("hostile") / "home"
    models = home / "models"
    shutil.copytree(tiny_models[0], models / "teacher")
    shutil.copytree(tiny_models[1], models / "student")
    s = Stack(home, make_env(home, TAILOR_MODEL_SOURCES=str(models),
                             TAILOR_API_KEYS=f"{A}:train,{B}:train,{READER}:classify,"
                                             f"{ROOT}:admin"))
    s.start_api(worker=True)
    yield s
    s.discard()


def upload(http: httpx.Client, key: str) -> str:
    resp = http.post("/datasets", json={"name": "corpus", "records": [
        {"text": t} for t in corpus(40)]}, headers=bearer(key))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def body(stack: Stack, name: str, dataset_id: str, student: str | None = None) -> dict:
    models = stack.home / "models"
    return job_body(name, dataset_id, str(models / "teacher"), student or str(models / "student"))


def test_a_train_key_cannot_take_over_another_keys_model_name(stack):
    with stack.client() as http:
        a_ds, b_ds = upload(http, A), upload(http, B)
        started = time.monotonic()
        a_job = http.post("/jobs", json=body(stack, "shared", a_ds), headers=bearer(A))
        assert a_job.status_code == 202, a_job.text
        with stack.client(headers=bearer(A)) as as_a:
            done = wait_job(as_a, a_job.json()["id"], timeout=240)
        train_s = time.monotonic() - started
        assert done["state"] == "succeeded" and done["model"] == {"name": "shared",
                                                                  "version": 1}, done

        taken = http.post("/jobs", json=body(stack, "shared", b_ds), headers=bearer(B))
        assert taken.status_code == 409, taken.text
        error = taken.json()["error"]
        assert error["code"] == "model_name_taken" and error["details"] == {"field": "name"}
        assert done["owner"] not in taken.text  # never names the owner
        # No job was created, and B's classify still gets A's version.
        assert http.get("/jobs", params={"name": "shared"}, headers=bearer(B)).json()[
            "jobs"] == []
        served = http.post("/classify", json={"model": "shared", "texts": ["flood"]},
                           headers=bearer(B))
        assert served.status_code == 200 and served.json()["version"] == 1, served.text
        # A's own next job and an admin's are admitted (cancelled at once: only admission
        # is under test); another name is B's to take.
        for key in (A, ROOT):
            ok = http.post("/jobs", json=body(stack, "shared", a_ds if key == A else b_ds),
                           headers=bearer(key))
            assert ok.status_code == 202, ok.text
            http.post(f"/jobs/{ok.json()['id']}/cancel", headers=bearer(key))
        other = http.post("/jobs", json=body(stack, "shared-b", b_ds), headers=bearer(B))
        assert other.status_code == 202, other.text
        http.post(f"/jobs/{other.json()['id']}/cancel", headers=bearer(B))
    record(21, "a train key registers under another key's model name",
           "key A trains `shared` to version 1; key B submits a job named `shared`",
           ["B is refused at submission with 409 model_name_taken, the owner not named; no job "
            "is created", "the bare name still serves A's version to every key",
            "A's own next job and an admin's job under the name are admitted",
            "a race for a free name is refused at registration (unit: test_model_names)"],
           {"tiny job to version 1": f"{train_s:.1f}s"})


TRAVERSALS = ["..%5C..%5C..%5Ckeys", "..%5C..%5C..%5Cjobs%5Cjob_0123456789abcdef",
              "x%5C..%5C..%5C..%5Cmetrics", "%2E%2E%5C%2E%2E%5Cparts%5Cjobs", "job%0A"]


def test_dashboard_links_cannot_steer_the_pages_keyed_fetch(stack):
    with stack.client() as http:
        for shell in ("/ui/jobs/", "/ui/models/"):
            for tail in TRAVERSALS:
                resp = http.get(shell + tail)
                assert resp.status_code == 404, (shell, tail, resp.text[:200])
                assert resp.json()["error"]["code"] in ("not_found", "model_not_found")
                assert "data-part" not in resp.text
        page = http.get("/ui/jobs/job_0123456789abcdef")
        assert page.status_code == 200
        assert 'data-part="/ui/parts/jobs/job_0123456789abcdef"' in page.text
        model = http.get("/ui/models/crisis.v2-a", params={"version": 3})
        assert 'data-part="/ui/parts/models/crisis.v2-a?version=3"' in model.text
        policy = page.headers["content-security-policy"]
        assert "form-action 'self'" in policy and "base-uri 'none'" in policy
    record(22, "dashboard links that steer the page's keyed fetch",
           "shell URLs whose id holds `..\\` (a browser reads `\\` as `/`) or a newline, sent "
           "to a user whose dashboard fetches its part with their key",
           ["every such shell answers 404 without a page", "valid ids and names still load",
            "CSP form-action 'self' and base-uri 'none': injected HTML cannot post a typed "
            "key elsewhere"], {"spellings tried": len(TRAVERSALS) * 2})


def test_paths_the_file_system_cannot_look_up_and_scopes(stack):
    models = stack.home / "models"
    uris = {"a 300-character name": str(models / ("x" * 300)),
            "a long name below a folder": str(models / "student" / ("y" * 256)),
            "a long name then more path": str(models / ("z" * 260) / "config.json"),
            "a lone surrogate": str(models / "student\ud83d"),
            "a lone low surrogate": f"file://{models}/\udc80"}
    with stack.client() as http:
        ds = upload(http, A)
        for what, uri in uris.items():
            # json.dumps writes a lone surrogate as its \\u escape, as a client would.
            resp = http.post("/jobs", content=json.dumps(body(stack, "probe", ds, uri)),
                             headers={**bearer(A), "Content-Type": "application/json"})
            assert resp.status_code == 422, (what, resp.text)
            error = resp.json()["error"]
            if "surrogate" in what:  # the strict JSON reader refuses it (check_uri too)
                assert error["code"] == "invalid_text", (what, resp.text)
                assert error["details"]["reason"] == "lone_surrogate"
                assert error["message"].startswith("student.model: ")
            else:
                assert error["code"] == "model_not_found", (what, resp.text)
                assert error["details"] == {"field": "student.model"}
        # A classify key reaches no training route.
        for method, path in (("POST", "/datasets"), ("POST", "/jobs"), ("GET", "/jobs"),
                             ("GET", "/datasets"), ("GET", "/ui/parts/jobs"),
                             ("GET", "/metrics"), ("GET", "/keys")):
            resp = http.request(method, path, json={}, headers=bearer(READER))
            assert resp.status_code == 403, (method, path, resp.text)
    assert "Traceback" not in stack.procs[0].log.read_text(errors="replace")
    record_input("model paths the file system cannot look up", ["POST /jobs student.model"],
                 list(uris), ["422 naming student.model: model_not_found (too long), "
                              "validation_error (surrogates); never 500"])

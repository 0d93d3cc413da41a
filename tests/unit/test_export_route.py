"""GET /models/{name}/versions/{v}/export on tiny students (embedded, in-process app): what an
archive holds, its example answering as /classify does, the cache (reused, verified,
rebuilt), concurrent requests, and the refusals: unknown format, unexportable, archived."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
from pathlib import Path

from app.core.config import get_settings
from tests.fixtures.exports import readme_example, run_example, unpack
from tests.fixtures.versions import register_tiny
from tests.integration.report import record_input
from tests.unit.test_ownership import bearer, restart_app

TEXTS = ["flood water rose in the city", "the team won the football match",
         "earthquake killed hundreds of people", "stock market rose today",
         "fire " * 40]  # cut at max_length: `truncated`
URL = "/models/{name}/versions/{version}/export?format={fmt}"


def export(client, fmt: str = "onnx", name: str = "crisis", version: int = 1, **kw):
    return client.get(URL.format(name=name, version=version, fmt=fmt), **kw)


def exports_dir(name: str = "crisis", version: int = 1) -> Path:
    from app.core.db import session_scope
    from app.registry.service import get_version

    with session_scope() as db:
        path = get_version(db=db, name=name, version=version).artifact_path
    return get_settings().artifacts / path / "exports"


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    return error


def test_an_onnx_export_answers_as_classify_does_and_is_built_once(client, tiny_models,
                                                                   tmp_path):
    register_tiny(tiny_models[1], name="topics", labels=("fire", "flood", "quake"),
                  multi_label=True, temperature=1.5, seed=3)
    resp = export(client, name="topics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/gzip"
    assert resp.headers["x-tailor-export-cache"] == "built"
    assert resp.headers["x-tailor-archived"] == "false"
    assert resp.headers["x-tailor-export-sha256"] == hashlib.sha256(resp.content).hexdigest()
    assert 'filename="topics-v1-onnx.tar.gz"' in resp.headers["content-disposition"]
    folder = unpack(resp.content, tmp_path)
    assert folder.name == "topics-v1-onnx"
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "tokenizer.json", "README.md",
                                                  "labels.json", "tailor.json", "metrics.json",
                                                  "lineage.json", "run.py"}
    assert json.loads((folder / "labels.json").read_text()) == ["fire", "flood", "quake"]
    assert json.loads((folder / "lineage.json").read_text())["code_version"] == "0.1.0"
    assert readme_example(folder) == (folder / "run.py").read_text()

    # The project's python holds onnxruntime, tokenizers and numpy: enough for the tiny model
    # (tests/e2e runs it in a venv holding only those, against a real student).
    for args, extra in (((), {}), (("--threshold", "0.3", "--top-k", "2"),
                                   {"threshold": 0.3, "top_k": 2})):
        got = run_example(sys.executable, folder, TEXTS, *args)
        want = client.post("/classify", json={"model": "topics:1", "texts": TEXTS,
                                              **extra}).json()["results"]
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert [g["truncated"] for g in got] == [w["truncated"] for w in want]
        assert want[-1]["truncated"]
        for g, w in zip(got, want, strict=True):
            assert g["scores"].keys() == w["scores"].keys()
            assert max(abs(g["scores"][k] - w["scores"][k]) for k in w["scores"]) < 1e-4

    again = export(client, name="topics")  # served from the cache, verified
    assert again.headers["x-tailor-export-cache"] == "hit"
    assert again.content == resp.content
    archives = list(exports_dir("topics").glob("onnx-*.tar.gz"))
    assert len(archives) == 1

    data = bytearray(archives[0].read_bytes())  # a flipped byte: the cache is not trusted
    data[len(data) // 2] ^= 0xFF
    archives[0].write_bytes(bytes(data))
    rebuilt = export(client, name="topics")
    assert rebuilt.headers["x-tailor-export-cache"] == "rebuilt"
    assert rebuilt.headers["x-tailor-export-sha256"] == hashlib.sha256(
        rebuilt.content).hexdigest()
    unpack(rebuilt.content, tmp_path / "rebuilt")
    assert [p.name for p in exports_dir("topics").glob("onnx-*.tar.gz")] != [archives[0].name]



def test_the_hf_export_holds_a_standard_encoder_folder_and_the_head(client, tiny_models,
                                                                    tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    register_tiny(tiny_models[1])
    resp = export(client, "hf")
    assert resp.status_code == 200, resp.text
    folder = unpack(resp.content, tmp_path)
    assert folder.name == "crisis-v1-hf"
    encoder = AutoModel.from_pretrained(str(folder / "encoder"))
    assert encoder.config.id2label == {0: "crisis", 1: "calm"}
    assert not any("lora" in name for name, _ in encoder.named_parameters())
    head = load_file(str(folder / "head.safetensors"))
    assert head["weight"].shape == (2, encoder.config.hidden_size)
    assert readme_example(folder) == (folder / "run.py").read_text()
    # Its example runs against a real student in tests/e2e/test_export_real_student.py.

    for cached in exports_dir().glob("hf-*.tar.gz"):
        cached.unlink()  # a missing cached file: rebuilt
    assert export(client, "hf").headers["x-tailor-export-cache"] == "rebuilt"


def test_two_requests_at_once_build_one_export_while_classify_answers(client, tiny_models):
    register_tiny(tiny_models[1])
    body = {"model": "crisis:1", "texts": TEXTS}
    before = client.post("/classify", json=body).json()
    answers: list = [None, None]

    def fetch(i: int) -> None:
        answers[i] = export(client)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    during = []
    while any(t.is_alive() for t in threads):  # the build shares the process with serving
        during.append(client.post("/classify", json=body))
    for t in threads:
        t.join()
    assert during and all(r.status_code == 200 and r.json() == before for r in during)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sorted(a.headers["x-tailor-export-cache"] for a in answers) == ["built", "hit"]
    assert answers[0].content == answers[1].content
    assert len(list(exports_dir().glob("onnx-*.tar.gz"))) == 1
    assert not [p for p in exports_dir().iterdir() if p.name.startswith(".")]  # no temp left


def test_unknown_format_is_a_422_naming_the_parameter(client, tiny_models):
    register_tiny(tiny_models[1])
    for url in ("/models/crisis/versions/1/export?format=pickle",
                "/models/crisis/versions/1/export"):
        error = _error(client.get(url), 422, "validation_error")
        assert "format" in error["message"], error
    record_input("export format that is unknown or missing", ["GET .../versions/{v}/export"],
                 ["format=pickle", "no format"], ["422 naming query.format"])


def test_an_unexportable_version_is_a_409_with_the_reason(client, tiny_models, tmp_path):
    base = tmp_path / "base-copy"
    shutil.copytree(tiny_models[1], base)
    register_tiny(str(base))
    shutil.rmtree(base)  # its base model is gone: nothing to merge the adapter into
    error = _error(export(client), 409, "not_exportable")
    assert "crisis:1 cannot be exported" in error["message"]
    assert error["details"]["reason"] == "model_not_found", error

    register_tiny(tiny_models[1])  # version 2: its adapter file changed after registration
    adapter = exports_dir(version=2).parent / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes() + b" ")
    error = _error(export(client, version=2), 409, "not_exportable")
    assert error["details"]["reason"] == "artifact_corrupt", error
    record_input("a version that cannot be exported", ["GET .../versions/{v}/export"],
                 ["its base model deleted", "its adapter changed after registration"],
                 ["409 not_exportable, details.reason model_not_found / artifact_corrupt"])


def test_an_archived_version_exports_and_says_so(client, tiny_models):
    register_tiny(tiny_models[1])
    assert client.post("/models/crisis/versions/1/archive").status_code == 200
    resp = export(client, "hf")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tailor-archived"] == "true"


def test_exports_follow_the_version_routes_access_rules(client, tiny_models, monkeypatch):
    register_tiny(tiny_models[1])
    with restart_app(monkeypatch, "exp-admin:admin,exp-reader:classify,exp-other:train"
                     ) as keyed:
        _error(export(keyed), 401, "unauthorized")
        # Registered models are shared: any key with classify reads (and exports) them.
        for key in ("exp-reader", "exp-other"):
            assert export(keyed, "hf", headers=bearer(key)).status_code == 200
        # An absent version answers exactly as GET /models/{name}/versions/{v} does.
        for name, version in (("crisis", 9), ("nomodel", 1)):
            absent = keyed.get(f"/models/{name}/versions/{version}",
                               headers=bearer("exp-reader"))
            exported = export(keyed, name=name, version=version, headers=bearer("exp-reader"))
            assert exported.status_code == absent.status_code == 404
            assert exported.json() == absent.json()

"""The ONNX serving backend on tiny students: the graph served is the version's cached ONNX
export, answers equal the torch path's, the memory budget counts the compiled copy, a
version without held-out texts serves fp32 unmeasured, and a version that cannot be
compiled is served by torch under `auto` and refused with 503 under `onnx`."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Overloaded
from app.registry.service import get_version
from app.serving.compiled import (
    COMPILE_RETRY_SECONDS,
    FP32_FILE,
    CompiledRecord,
    Compiler,
    compile_version,
    compiled_dir,
    read_record,
)
from tests.fixtures.versions import register_tiny
from worker.distill.student import ArtifactError

TEXTS = ["flood water rose in the city", "the team won the football match",
         "earthquake killed hundreds", "stock market rose today"]


def app_client(monkeypatch: pytest.MonkeyPatch, backend: str) -> TestClient:
    from app.main import create_app

    monkeypatch.setenv("TAILOR_SERVING_BACKEND", backend)
    get_settings.cache_clear()
    return TestClient(create_app())


@pytest.fixture
def version(embedded: Path, tiny_models: tuple[str, str]) -> Iterator[Path]:
    """`crisis` v1 on the tiny student (no job row: no held-out texts); its artifact folder."""
    register_tiny(tiny_models[1], seed=1)
    with session_scope() as db:
        path = get_version(db=db, name="crisis", version=1).artifact_path
    yield get_settings().artifacts / path
    get_settings.cache_clear()


def probs(client: TestClient) -> np.ndarray:
    resp = client.post("/classify", json={"model": "crisis:1", "texts": TEXTS})
    assert resp.status_code == 200, resp.text
    return np.array([[r["scores"][k] for k in ("calm", "crisis")]
                     for r in resp.json()["results"]])


def test_onnx_serves_the_exported_graph_as_torch_answers(
        version: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with app_client(monkeypatch, "torch") as client:
        expected = probs(client)
    with app_client(monkeypatch, "onnx") as client:
        got = probs(client)
        pool = client.app.state.pool
        served = pool.served["crisis:1"]
        graph = compiled_dir(version) / FP32_FILE
        assert served.precision == "fp32" and served.head is None
        assert pool.nbytes() == graph.stat().st_size  # the compiled copy, no torch base
        detail = client.get("/models/crisis/versions/1").json()
        archive = client.get("/models/crisis/versions/1/export?format=onnx")
        assert archive.status_code == 200
        assert archive.headers["X-Tailor-Export-Cache"] == "hit"  # built once, for serving
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert detail["serving"] == {"precision": "fp32", "int8_agreement": None,
                                 "agreement_texts": None}
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/model.onnx"))
        shipped = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(graph.read_bytes()).hexdigest()


def test_a_version_that_cannot_compile_falls_back_under_auto_and_is_503_under_onnx(
        version: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (version / "exports").write_text("not a folder: the export cache cannot be written")
    with app_client(monkeypatch, "auto") as client:
        got = probs(client)
        assert client.app.state.pool.served["crisis:1"].precision == "torch"
        assert client.get("/models/crisis/versions/1").json()["serving"] is None
    with app_client(monkeypatch, "torch") as client:
        np.testing.assert_allclose(got, probs(client), atol=1e-6)
    with app_client(monkeypatch, "onnx") as client:
        resp = client.post("/classify", json={"model": "crisis:1", "texts": TEXTS})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "compile_failed"


def _tiny_graph(out: Path) -> None:
    """A one-MatMul fp32 graph: enough for quantize_dynamic (no held-out texts to run)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)


def test_processes_loading_one_version_at_once_compile_it_once(tmp_path: Path) -> None:
    # Two API processes sharing the store used to build into the same temp files at once;
    # the second now waits on the folder's lock and reuses the first one's record.
    calls: list[Path] = []
    second: list[threading.Thread] = []

    def slow_first(out: Path) -> None:
        calls.append(out)
        if len(calls) == 1:  # the other load starts while this one is mid-build
            thread = threading.Thread(target=compile_once)
            second.append(thread)
            thread.start()
            thread.join(timeout=1.0)  # it must wait for us (the lock), not build alongside
        _tiny_graph(out)

    records: list[CompiledRecord] = []

    def compile_once() -> None:
        records.append(compile_version(tmp_path, fp32_graph=slow_first, heldout=list,
                                       pad_id=0, multi_label=False, threads=1))

    compile_once()
    second[0].join()
    assert len(calls) == 1, "the version was compiled twice"
    assert len(records) == 2 and records[0] == records[1]
    assert read_record(compiled_dir(tmp_path)) == records[0]


def test_a_failed_compile_is_retried_later_not_on_every_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[str] = []

    def broken(key: str, artifact_dir: Path, out: Path) -> None:
        tries.append(key)
        raise RuntimeError("the exporter failed")

    def compiler(backend: str) -> Compiler:
        return Compiler(backend, fp32_graph=broken, threads=1, heldout=lambda *_: [],
                        record=lambda *_: None, min_agreement=0.99, min_texts=50,
                        max_texts=10)

    onnx_backend, auto = compiler("onnx"), compiler("auto")
    tokenizer: Any = None  # never reached: the build fails first
    for _ in range(3):
        with pytest.raises(ArtifactError) as err:
            onnx_backend.load("crisis:1", tmp_path, tokenizer, 0, False)
        assert err.value.code == "compile_failed" and "exporter failed" in err.value.message
        assert auto.load("crisis:1", tmp_path, tokenizer, 0, False) is None  # torch serves
    assert tries == ["crisis:1", "crisis:1"]  # one try per compiler, not one per request
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + COMPILE_RETRY_SECONDS + 1)
    with pytest.raises(ArtifactError):
        onnx_backend.load("crisis:1", tmp_path, tokenizer, 0, False)
    assert len(tries) == 3  # tried again once the wait is over

    def busy(key: str, artifact_dir: Path, out: Path) -> None:
        tries.append(key)
        if len(tries) % 2:
            raise Overloaded("4 exports are being built", retry_after=15)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    onnx_backend.fp32_graph = busy
    for _ in range(2):  # export queue full, database away: not broken, tried each time
        with pytest.raises(ArtifactError):
            onnx_backend.load("crisis:2", tmp_path / "v2", tokenizer, 0, False)
    assert tries[3:] == ["crisis:2", "crisis:2"]

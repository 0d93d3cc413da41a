"""The ONNX serving backend on tiny students: the graph served is the version's cached ONNX
export, answers equal the torch path's, the memory budget counts the compiled copy, a
version without held-out texts serves fp32 unmeasured, and a version that cannot be
compiled is served by torch under `auto` and refused with 503 under `onnx`."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import session_scope
from app.registry.service import get_version
from app.serving.compiled import FP32_FILE, compiled_dir
from tests.fixtures.versions import register_tiny

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

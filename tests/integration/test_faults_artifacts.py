"""A corrupted artifact on disk (embedded mode: SQLite, filesystem broker, app.serve)."""

from __future__ import annotations

import sys

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.faults import FAST, submit
from tests.integration.lifecycle import upload
from tests.integration.report import record
from tests.support import Stack, free_port, job_body, wait_for, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]
TEXTS = ["flood water rose", "concert opened"]


def test_one_flipped_byte_refuses_that_version_and_others_keep_serving(embedded_stack: Stack,
                                                                      tiny_models):
    s = embedded_stack
    s.env.update(FAST)
    s.port = free_port()
    s.spawn("serve", [sys.executable, "-m", "app.serve", "--port", str(s.port)])
    wait_for(lambda: httpx.get(f"{s.url}/readyz", timeout=2).status_code == 200, 60,
             what="embedded /readyz")
    with s.client() as client:
        try:
            ds, _ = upload(client)
            jobs = [submit(client, job_body(name, ds, *tiny_models)) for name in ("alpha", "beta")]
            assert all(wait_job(client, j, timeout=180)["state"] == "succeeded" for j in jobs)
        except BaseException:
            print(s.logs())
            raise
        engine = create_engine(f"sqlite:///{s.home / 'tailor.db'}")
        with engine.connect() as conn:
            rel = conn.execute(text("SELECT artifact_path FROM model_versions "
                                    "WHERE model_name = 'alpha'")).scalar_one()
        engine.dispose()
        target = s.home / "artifacts" / rel / "adapter.safetensors"
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))

        refused = [client.post("/classify", json={"model": "alpha", "texts": TEXTS})
                   for _ in range(3)]
        served = [client.post("/classify", json={"model": "beta", "texts": TEXTS})
                  for _ in range(3)]
        pinned = client.post("/classify", json={"model": "alpha:1", "texts": TEXTS})
    for resp in [*refused, pinned]:
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["code"] == "artifact_corrupt"
        assert "alpha:1" in error["message"] and "adapter.safetensors" in error["message"]
    assert all(r.status_code == 200 and len(r.json()["results"]) == 2 for r in served)
    record(7, "one byte flipped in a registered artifact",
           "XOR one byte in the middle of alpha v1's adapter.safetensors (embedded mode)",
           ["alpha:1 refused on every request: 503 artifact_corrupt naming the file",
            "the corrupt weights were never loaded", "beta kept serving (200)"],
           {"refused": f"{len(refused) + 1} of {len(refused) + 1}",
            "served": f"{len(served)} of {len(served)}",
            "message": refused[0].json()["error"]["message"]})

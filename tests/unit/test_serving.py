"""/classify on real (tiny) students: shared base, mixed batches, calibration, limits, 429."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.core.config import get_settings
from app.core.db import session_scope
from app.registry.service import get_version
from app.serving.pool import ModelPool
from tests.fixtures.versions import register_tiny

TEXTS = ["flood water rose in the city", "the team won the football match",
         "earthquake killed hundreds", "stock market rose today"]


def _classify(client, model: str, texts=TEXTS, **extra):
    resp = client.post("/classify", json={"model": model, "texts": list(texts), **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _probs(body) -> np.ndarray:
    return np.array([[r["scores"][k] for k in sorted(r["scores"])] for r in body["results"]])


def _row(name: str, version: int):
    with session_scope() as db:
        row = get_version(db=db, name=name, version=version)
        return row.ref, row.artifact_path, dict(row.files)


def test_versions_share_one_base_and_one_batch_mixes_them(client, tiny_models):
    for seed in (1, 2):
        register_tiny(tiny_models[1], seed=seed)
    register_tiny(tiny_models[1], name="topics", labels=("fire", "flood", "quake"),
                  multi_label=True, seed=3)
    alone = {m: _probs(_classify(client, m)) for m in ("crisis:1", "crisis:2", "topics:1")}
    pool = client.app.state.pool
    assert pool.stats()["bases"] == 1 and len(pool.stats()["versions"]) == 3
    assert not np.allclose(alone["crisis:1"], alone["crisis:2"], atol=1e-3)

    served = {m: pool.acquire(*_row(*m.split(":"))) for m in alone}  # type: ignore[arg-type]
    rows = [(served[m], ids) for m in alone
            for ids in pool.encode(served[m], TEXTS).ids]
    mixed = pool.forward(rows)  # one forward pass, three adapters, three heads
    for i, m in enumerate(alone):
        got = np.stack(mixed[i * len(TEXTS):(i + 1) * len(TEXTS)])
        got = got[:, np.argsort(served[m].labels)]  # label order, as _probs sorts them
        np.testing.assert_allclose(got, alone[m], atol=1e-5)
    for s in served.values():
        pool.release(s)


def _record_forwards(pool) -> list[list[str]]:
    """Keep the versions of each forward pass's rows (the real forward still runs)."""
    calls: list[list[str]] = []
    forward = pool.forward
    pool.forward = lambda rows: calls.append([s.key for s, _ in rows]) or forward(rows)
    return calls


def _wait(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_batcher_puts_concurrent_requests_into_one_mixed_forward(client, tiny_models):
    for seed in (1, 2):
        register_tiny(tiny_models[1], seed=seed)
    expected = {m: _classify(client, m)["results"] for m in ("crisis:1", "crisis:2")}
    batcher, pool = client.app.state.batcher, client.app.state.pool
    calls = _record_forwards(pool)
    got: list = []
    models = ["crisis:1", "crisis:1", "crisis:2"]
    threads = [threading.Thread(target=lambda m=m: got.append(
        (m, _classify(client, m)["results"]))) for m in models]
    with next(iter(pool.bases.values())).lock:  # the model thread waits here
        threads[0].start()
        _wait(lambda: calls)  # the first request is in the forward pass
        for t in threads[1:]:
            t.start()
        _wait(lambda: batcher.queued == 2 * len(TEXTS))
    for t in threads:
        t.join(10)
    assert sorted(got) == sorted((m, expected[m]) for m in models)
    assert [sorted(set(c)) for c in calls] == [["crisis:1"], ["crisis:1", "crisis:2"]]
    assert [len(c) for c in calls] == [len(TEXTS), 2 * len(TEXTS)]


def test_probabilities_are_calibrated_with_the_versions_temperature(client, tiny_models):
    register_tiny(tiny_models[1], seed=4, temperature=1.0)
    register_tiny(tiny_models[1], seed=4, temperature=3.0)  # same weights, softer
    p1, p3 = _probs(_classify(client, "crisis:1")), _probs(_classify(client, "crisis:2"))
    logits = np.log(p1)
    expected = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)
    np.testing.assert_allclose(p3, expected, atol=1e-4)
    assert np.all(np.abs(p3 - 0.5) <= np.abs(p1 - 0.5) + 1e-6)


def test_threshold_top_k_and_multi_label(client, tiny_models):
    register_tiny(tiny_models[1], seed=5)
    register_tiny(tiny_models[1], name="topics", labels=("fire", "flood", "quake"),
                  multi_label=True, seed=6)
    single = _classify(client, "crisis")["results"]
    for r in single:
        assert r["label"] == max(r["scores"], key=r["scores"].get)
        assert abs(sum(r["scores"].values()) - 1) < 1e-4
    assert [r["label"] for r in _classify(client, "crisis", threshold=1.0)["results"]] == [
        None] * len(TEXTS)  # abstains: no score reaches 1.0
    top1 = _classify(client, "crisis", top_k=1)["results"]
    assert [list(r["scores"]) for r in top1] == [[r["label"]] for r in single]
    multi = _classify(client, "topics")["results"]
    for r in multi:
        assert r["label"] == [k for k, v in r["scores"].items() if v >= 0.5]
    assert all(r["label"] == ["fire", "flood", "quake"] or len(r["label"]) == 3
               for r in _classify(client, "topics", threshold=0.0)["results"])
    assert any(abs(sum(r["scores"].values()) - 1) > 1e-3 for r in multi)  # sigmoid, not softmax


def test_long_texts_are_truncated_and_say_so(client, tiny_models):
    register_tiny(tiny_models[1], seed=7, max_length=8)
    head = "flood water rose in the city"  # 6 words + [CLS] and [SEP] = 8 tokens
    out = _classify(client, "crisis", texts=[head, head + " and the team won",
                                             head + " after the storm killed thousands"])
    assert [r["truncated"] for r in out["results"]] == [False, True, True]
    assert out["results"][1]["scores"] == out["results"][0]["scores"] == out["results"][2][
        "scores"]  # what lies beyond max_length is not read


def test_a_corrupt_version_is_refused_and_others_keep_serving(client, tiny_models):
    for seed in (1, 2):
        register_tiny(tiny_models[1], seed=seed)
    _, path, _ = _row("crisis", 2)
    adapter = get_settings().artifacts / path / "adapter.safetensors"
    data = bytearray(adapter.read_bytes())
    data[len(data) // 2] ^= 0xFF
    adapter.write_bytes(bytes(data))
    for _ in range(2):  # refused every time, not only on the first try
        resp = client.post("/classify", json={"model": "crisis:2", "texts": TEXTS})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "artifact_corrupt"
        assert "crisis:2" in resp.json()["error"]["message"]
    assert _classify(client, "crisis:1")["version"] == 1
    assert client.app.state.pool.stats()["versions"] == ["crisis:1"]


def test_lru_eviction_keeps_weights_under_the_memory_budget(embedded, tiny_models):
    for seed in (1, 2, 3):
        register_tiny(tiny_models[1], seed=seed)
    settings = get_settings()
    probe = ModelPool(settings.artifacts, settings.cache, 64, 1 << 40)
    probe.warm(*_row("crisis", 1))
    base_bytes = next(iter(probe.bases.values())).nbytes
    version_bytes = probe.nbytes() - base_bytes
    assert 0 < version_bytes < base_bytes

    pool = ModelPool(settings.artifacts, settings.cache, 64, base_bytes + 2 * version_bytes)
    pool.warm(*_row("crisis", 1))
    pool.warm(*_row("crisis", 2))
    pool.warm(*_row("crisis", 1))  # used again: crisis:2 is now the least recently used
    pool.warm(*_row("crisis", 3))
    assert pool.stats()["versions"] == ["crisis:1", "crisis:3"]
    assert pool.nbytes() <= base_bytes + 2 * version_bytes
    pinned = pool.acquire(*_row("crisis", 1))  # a queued request needs it: never evicted
    pool.warm(*_row("crisis", 3))
    pool.warm(*_row("crisis", 2))
    assert pool.stats()["versions"] == ["crisis:1", "crisis:2"]
    pool.release(pinned)
    assert "crisis:3" not in next(iter(pool.bases.values())).encoder.peft_config


@pytest.fixture
def small_queue(monkeypatch, embedded):
    monkeypatch.setenv("TAILOR_MAX_CLASSIFY_TEXTS", "4")
    monkeypatch.setenv("TAILOR_SERVING_MAX_QUEUE", "4")
    get_settings.cache_clear()


def test_a_full_queue_answers_429_at_once_and_recovers(small_queue, client, tiny_models):
    register_tiny(tiny_models[1], seed=1)
    expected = _classify(client, "crisis")["results"]
    batcher, pool = client.app.state.batcher, client.app.state.pool
    calls = _record_forwards(pool)
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(_classify(client, "crisis")))
               for _ in range(2)]
    with next(iter(pool.bases.values())).lock:  # busy: one request in the model, one queued
        threads[0].start()
        _wait(lambda: calls)
        threads[1].start()
        _wait(lambda: batcher.queued == len(TEXTS))
        started = time.perf_counter()
        refused = client.post("/classify", json={"model": "crisis", "texts": ["x"]})
        elapsed = time.perf_counter() - started
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert elapsed < 0.5  # answered while the model is still busy, not after it
        assert batcher.queued == len(TEXTS)  # the refused text was not queued
    for t in threads:
        t.join(10)
    assert [a["results"] for a in answers] == [expected, expected]
    assert _classify(client, "crisis")["results"] == expected  # serving again
    assert pool.served["crisis:1"].pins == 0


def test_the_queue_is_also_bounded_by_the_time_it_needs_to_clear(client, tiny_models):
    from app.core.errors import Overloaded
    from app.serving.batcher import MicroBatcher

    register_tiny(tiny_models[1], seed=1)
    pool = client.app.state.pool
    served = pool.acquire(*_row("crisis", 1))
    batcher = MicroBatcher(pool, max_batch=8, max_wait_ms=5, max_queue=1000,
                           max_queue_delay_ms=500, threads=1)  # not started: nothing drains
    batcher._running, batcher.throughput = True, 10.0  # as if measured: 10 texts/s
    batcher.admit(6)
    batcher.submit(served, [[1, 2]] * 6)  # 0.6 s of work queued, over the 0.5 s bound
    with pytest.raises(Overloaded) as refused:
        batcher.admit(1)
    assert refused.value.headers["Retry-After"] == "1" and batcher.queued == 6
    batcher.throughput = 100.0  # faster model: the same queue clears in 60 ms
    batcher.admit(1)  # admitted texts count before they are submitted
    assert batcher.queued == 7
    batcher.cancel(1)
    assert batcher.queued == 6

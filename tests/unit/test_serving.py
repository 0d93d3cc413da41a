"""/classify on real (tiny) students: shared base, mixed batches, calibration, limits, 429,
and one bad text failing only its own request."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer, normalizers

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.texts import InvalidText, validate_text
from app.registry.service import get_version
from app.serving.pool import ModelPool
from tests.fixtures.versions import register_tiny
from tests.integration.report import record_input

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


# --- one bad text fails only its own request (issue 11, kinds 1 and 9) ---

def _record_input(monkeypatch, kind: str, inputs: list[str], held: list[str]) -> None:
    """An Inputs row of the reliability report (written only under make bench-reliability)."""
    record_input(kind, ["POST /classify"], inputs, held)


def _post(client, body: dict):
    """POST /classify with the body JSON-escaped as a client would send it (lone surrogates
    travel as `\\ud83d` escapes, which the server decodes into the string)."""
    return client.post("/classify", content=json.dumps(body).encode(),
                       headers={"content-type": "application/json"})


INVALID_TEXTS = [  # (text, reason); the first is issue 11's example
    ("Flood \ud83d hits town", "lone_surrogate"),
    ("\udc8e water rising", "lone_surrogate"),  # a lone low surrogate
    ("cut off at the end \ud83c", "lone_surrogate"),
    ("flood\x00water", "nul"),
    ("\x1b\x07\x85", "empty"),  # control characters only (ESC, BEL, NEL)
    ("", "empty"),
    ("   \n\t", "empty"),
    ("\u200b\u200b", "empty"),  # zero-width spaces
    ("\ufeff", "empty"),  # a byte-order mark alone
    ("\u00a0\u2060\u3000", "empty"),  # no-break space, word joiner, ideographic space
    ("\u202e\u200d", "empty"),  # bidi override + zero-width joiner
]
VALID_ODD_TEXTS = ["Flood 🌊 hits town", "فيضانات في المدينة", "\ufeffflood at the start",
                   "line one\r\nline two\ttab", "👩‍🚒 firefighter", "Überschwemmung",
                   # other control characters are content (README, "Inputs"): kept as sent
                   "\x1b[31mred alert", "price \x85 rose", "page\x0cbreak\u2028here"]


@pytest.mark.parametrize("text, reason", INVALID_TEXTS)
def test_validate_text_refuses_what_cannot_be_read(text, reason):
    with pytest.raises(InvalidText) as refused:
        validate_text(text, "texts[3]")
    err = refused.value
    assert err.status_code == 422 and err.code == "invalid_text"
    assert err.message.startswith("texts[3]: ")
    assert err.details["field"] == "texts[3]" and err.details["reason"] == reason


@pytest.mark.parametrize("text", VALID_ODD_TEXTS)
def test_validate_text_keeps_real_multilingual_text(text):
    assert validate_text(text, "texts[0]") == text


def _bert_normalized(src: str, dst: Path) -> str:
    """The tiny student with a BERT normalizer, as all-MiniLM-L6-v2 has: it drops U+FFFD
    and control characters and strips accents, so some visible texts tokenize to nothing."""
    shutil.copytree(src, dst)
    tok = Tokenizer.from_file(str(dst / "tokenizer.json"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, strip_accents=True,
                                                lowercase=False)
    tok.save(str(dst / "tokenizer.json"))
    return str(dst)


@pytest.mark.reliability
def test_each_invalid_text_is_a_422_naming_it_and_touches_nothing(client, tiny_models,
                                                                  tmp_path, monkeypatch):
    register_tiny(tiny_models[1], seed=1)
    register_tiny(_bert_normalized(tiny_models[1], tmp_path / "bert"), name="normed", seed=2)
    pool, batcher = client.app.state.pool, client.app.state.batcher
    cases = [("crisis", text, reason) for text, reason in INVALID_TEXTS]
    cases += [("crisis", "x" * 20_001, None),  # over the length limit
              ("normed", "\ufffd\ufffd", "empty"),  # tokenizes to nothing
              ("normed", "\u0301\u0301", "empty")]  # combining accents alone: stripped
    for model, text, reason in cases:
        resp = _post(client, {"model": model, "texts": TEXTS[:2] + [text] + TEXTS[2:]})
        assert resp.status_code == 422, (text, resp.text)
        err = resp.json()["error"]
        assert err["message"].startswith("texts[2]: ") and err["details"]["field"] == "texts[2]"
        if reason is not None:
            assert err["code"] == "invalid_text" and err["details"]["reason"] == reason
        assert batcher.queued == 0
        assert all(s.pins == 0 for s in pool.served.values())
    # the same texts are readable by a model whose tokenizer keeps them ([UNK])
    assert _classify(client, "crisis", texts=["\ufffd\ufffd", "\u0301"])["results"]
    assert len(_classify(client, "normed", texts=VALID_ODD_TEXTS)["results"]) == len(
        VALID_ODD_TEXTS)
    held = ["422 invalid_text naming texts[i], nothing queued or loaded for it",
            "emoji, Arabic, a leading BOM, CRLF and tabs, ZWJ sequences still classify (200)"]
    _record_input(monkeypatch, "text that is not valid Unicode",
                  [ascii(t) for t, r in INVALID_TEXTS if r == "lone_surrogate"], held)
    _record_input(monkeypatch, "text with no visible content, control characters or over "
                  "the limit", [ascii(t) for t, r in INVALID_TEXTS if r != "lone_surrogate"]
                  + ["'\\ufffd\\ufffd' and combining accents alone (tokenize to nothing "
                     "with a BERT normalizer)"], held)


@pytest.fixture
def roomy_queue(monkeypatch, embedded):
    """No time bound on the queue: a test that holds the model must not get 429s."""
    monkeypatch.setenv("TAILOR_SERVING_MAX_QUEUE_DELAY_MS", "600000")
    get_settings.cache_clear()


def _close(a: list[dict], b: list[dict]) -> bool:
    return all(x["label"] == y["label"] and x["scores"].keys() == y["scores"].keys()
               and all(abs(x["scores"][k] - y["scores"][k]) < 1e-5 for k in x["scores"])
               for x, y in zip(a, b, strict=True))


POISON = ["Flood \ud83d hits town", "\udc8e water rising", "x" * 20_001, "flood\x00water",
          "\u200b\ufeff"]


def test_poison_requests_among_60_concurrent_ones_fail_alone(roomy_queue, client, tiny_models):
    register_tiny(tiny_models[1], seed=1)
    expected = _classify(client, "crisis")["results"]
    batcher, pool = client.app.state.batcher, client.app.state.pool
    calls = _record_forwards(pool)
    valid: list = []
    refused: list = []
    threads = [threading.Thread(target=lambda: valid.append(_post(
        client, {"model": "crisis", "texts": TEXTS}))) for _ in range(60)]
    with next(iter(pool.bases.values())).lock:  # the model is busy: requests pile up
        threads[0].start()
        _wait(lambda: calls)
        for t in threads[1:]:
            t.start()
        _wait(lambda: batcher.queued == 59 * len(TEXTS))
        poison = [threading.Thread(target=lambda i=i, text=text: refused.append(_post(
            client, {"model": "crisis", "texts": TEXTS[:i] + [text] + TEXTS[i:]})))
            for i, text in enumerate(POISON)]
        for t in poison:  # each is answered while the model is still held
            t.start()
            t.join(10)
        assert not any(t.is_alive() for t in poison), "a poison request waited for the model"
        assert batcher.queued == 59 * len(TEXTS)  # no poison text joined the queue
    for t in threads + poison:
        t.join(30)
    assert [r.status_code for r in valid] == [200] * 60
    assert all(_close(r.json()["results"], expected) for r in valid)
    assert [(r.status_code, r.json()["error"]["details"]["field"]) for r in refused] == [
        (422, f"texts[{i}]") for i in range(len(POISON))]
    assert max(len(set(c)) for c in calls) == 1 and max(len(c) for c in calls) > len(TEXTS)
    assert pool.served["crisis:1"].pins == 0 and batcher.queued == 0


@pytest.mark.reliability
@pytest.mark.parametrize("poisoned", [1, 2])
def test_a_forward_pass_that_raises_fails_only_the_requests_that_cause_it(
        roomy_queue, client, tiny_models, poisoned, monkeypatch):
    """Fault injection: the model raises whenever a row holds the token "cholera"."""
    register_tiny(tiny_models[1], seed=1)
    expected = _classify(client, "crisis")["results"]
    batcher, pool = client.app.state.batcher, client.app.state.pool
    served = pool.served["crisis:1"]
    trigger = pool.encode(served, ["cholera"]).ids[0][1]
    forward, calls = pool.forward, []

    def poisoned_forward(rows):
        hit = [trigger in ids for _, ids in rows]
        calls.append(hit)
        if any(hit):
            raise RuntimeError("injected: the model cannot take this text")
        return forward(rows)

    pool.forward = poisoned_forward
    bodies = [{"model": "crisis", "texts": TEXTS} for _ in range(4)]
    for k in range(poisoned):  # the poison text sits at a different place in each
        bodies.insert(2 * k + 1, {"model": "crisis", "texts": TEXTS[:k] + [
            "cholera outbreak in the city"] + TEXTS[k:]})
    answers: dict[int, httpx.Response] = {}
    plain = TestClient(client.app, raise_server_exceptions=False)  # a 500 is an answer here
    threads = [threading.Thread(target=lambda i=i, b=b: answers.__setitem__(i, _post(plain, b)))
               for i, b in enumerate(bodies)]
    with next(iter(pool.bases.values())).lock:
        threads[0].start()
        _wait(lambda: calls)
        for t in threads[1:]:
            t.start()
        _wait(lambda: batcher.queued == sum(len(b["texts"]) for b in bodies[1:]))
    for t in threads:
        t.join(30)
    statuses = [answers[i].status_code for i in range(len(bodies))]
    bad = {i for i, b in enumerate(bodies) if len(b["texts"]) > len(TEXTS)}
    assert statuses == [500 if i in bad else 200 for i in range(len(bodies))]
    assert all(answers[i].json()["error"]["code"] == "internal_error" for i in bad)
    assert all(_close(answers[i].json()["results"], expected)
               for i in range(len(bodies)) if i not in bad)
    shared = [c for c in calls if any(c) and not all(c)]
    assert shared, "the poison never shared a forward pass with valid texts"
    assert pool.served["crisis:1"].pins == 0 and batcher.queued == 0
    _record_input(monkeypatch, "a text that makes the model's forward pass raise",
                  [f"{poisoned} of {len(bodies)} requests in one micro-batch hold a text the "
                   "(fault-injected) model raises on"],
                  ["the batch is re-run one request at a time: only the poisoned requests "
                   "fail (500 internal_error), the others get 200 with their usual scores"])


@pytest.mark.reliability
def test_top_k_bounds_multi_label_labels_too(client, tiny_models, monkeypatch):
    register_tiny(tiny_models[1], name="topics", labels=("fire", "flood", "quake", "storm"),
                  multi_label=True, seed=6)
    for k in (1, 2, 3):
        for threshold in (0.0, 0.5, None):
            extra = {"top_k": k} | ({} if threshold is None else {"threshold": threshold})
            for r in _classify(client, "topics", **extra)["results"]:
                assert len(r["scores"]) == k and set(r["label"]) <= set(r["scores"])
                if threshold == 0.0:  # every label passes: exactly the k shown, in order
                    assert r["label"] == list(r["scores"])
    full = _classify(client, "topics", threshold=0.0)["results"]
    assert all(len(r["label"]) == 4 for r in full)
    _record_input(monkeypatch, "top_k on a multi-label model",
                  ["top_k 1, 2, 3 of 4 labels with threshold 0.0, 0.5 and the default"],
                  ["label lists only labels that scores shows, in score order"])


def test_an_expired_reference_is_resolved_once_for_concurrent_requests(embedded, tiny_models,
                                                                       monkeypatch):
    from app.serving import refs as refs_module

    register_tiny(tiny_models[1], seed=1)
    calls: list[str] = []
    real = refs_module.resolve

    def counted(ref: str):
        calls.append(ref)
        time.sleep(0.2)  # a slow database: the others arrive while it answers
        return real(ref)

    monkeypatch.setattr(refs_module, "resolve", counted)
    cache = refs_module.RefCache(ttl=60)
    targets: list[object] = []
    threads = [threading.Thread(target=lambda: targets.append(cache.resolve("crisis")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["crisis"] and len(targets) == 8 and len(set(map(id, targets))) == 1


def test_first_requests_for_one_version_share_one_load_and_one_thread(client, tiny_models,
                                                                      monkeypatch):
    # Each waited for the load in a thread of its own: a burst of first requests for one
    # version (an ONNX compile takes 15-25 s) held every thread the API's sync routes use.
    register_tiny(tiny_models[1], seed=1)
    pool = client.app.state.pool
    n = 6
    pinned, entered = threading.Semaphore(0), []
    pin, acquire = pool.pin, pool.acquire

    def counting_pin(key):
        pinned.release()
        return pin(key)

    def slow_acquire(key, artifact_path, files):
        entered.append(threading.current_thread().name)
        for _ in range(n):  # every request has looked for the version before it loads
            assert pinned.acquire(timeout=30)
        return acquire(key, artifact_path, files)

    monkeypatch.setattr(pool, "pin", counting_pin)
    monkeypatch.setattr(pool, "acquire", slow_acquire)
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(_classify(client, "crisis:1")))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == n and all(a == answers[0] for a in answers)
    assert len(entered) == 1, f"{len(entered)} threads waited for one load"
